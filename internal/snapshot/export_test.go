package snapshot

// SetSaveSwappedHook makes Save call f with the result of its
// compare-and-swap, after the swap and before the advice cache is
// updated, and go on with what f returns.
func (s *Store) SetSaveSwappedHook(f func(stream string, err error) error) { s.testSaveSwapped = f }

// CachedBase returns the advice cache's base of stream, if it holds one.
func (s *Store) CachedBase(stream string) (uint64, bool) {
	b, ok, _ := s.cache.get(stream)
	return b, ok
}
