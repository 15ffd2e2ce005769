package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Product is the state of a product aggregate (stream product-...).
type Product struct {
	Name  string `json:"name"`
	Price int64  `json:"price"` // in cents
	Stock int64  `json:"stock"`
}

// The events of a product.
type (
	listed struct {
		Name  string `json:"name"`
		Price int64  `json:"price"`
		Stock int64  `json:"stock"`
	}
	priceChanged struct {
		Price int64 `json:"price"`
	}
	addedToCart struct {
		Cart  string `json:"cart"`
		Qty   int64  `json:"qty"`
		Price int64  `json:"price"`
	}
)

// Apply folds one event into a product. It refuses a stock below zero:
// replaying a stream with it checks the invariant at every revision.
func Apply(p Product, ev *esdv1.RecordedEvent) (Product, error) {
	var err error
	switch ev.GetType() {
	case "ProductListed":
		var e listed
		err = json.Unmarshal(ev.GetData(), &e)
		p = Product(e)
	case "PriceChanged":
		var e priceChanged
		err = json.Unmarshal(ev.GetData(), &e)
		p.Price = e.Price
	case "AddedToCart":
		var e addedToCart
		err = json.Unmarshal(ev.GetData(), &e)
		p.Stock -= e.Qty
	default:
		err = fmt.Errorf("unknown event type %q", ev.GetType())
	}
	if err == nil && p.Stock < 0 {
		err = fmt.Errorf("stock %d", p.Stock)
	}
	if err != nil {
		return p, fmt.Errorf("%s@%d: %w", ev.GetStream(), ev.GetRevision(), err)
	}
	return p, nil
}

var (
	errSoldOut = errors.New("not enough in stock")
	errUnknown = errors.New("no such product")
)

// priceChangedError refuses an add to cart at a price that is no longer
// the product's: the shopper saw an older one.
type priceChangedError struct{ Price int64 }

func (e *priceChangedError) Error() string { return fmt.Sprintf("the price is now %d", e.Price) }

// addToCart is the command: qty of the product into cart, at the price
// the shopper saw.
func addToCart(cart string, qty, seenPrice int64) func(Product) ([]*esdv1.ProposedEvent, error) {
	return func(p Product) ([]*esdv1.ProposedEvent, error) {
		switch {
		case p.Name == "":
			return nil, errUnknown
		case p.Price != seenPrice:
			return nil, &priceChangedError{p.Price}
		case p.Stock < qty:
			return nil, errSoldOut
		}
		return []*esdv1.ProposedEvent{client.JSONEvent("AddedToCart", addedToCart{cart, qty, seenPrice})}, nil
	}
}

// changePrice is the admin's command: the price newPrice makes of the
// current one.
func changePrice(newPrice func(old int64) int64) func(Product) ([]*esdv1.ProposedEvent, error) {
	return func(p Product) ([]*esdv1.ProposedEvent, error) {
		if p.Name == "" {
			return nil, errUnknown
		}
		return []*esdv1.ProposedEvent{client.JSONEvent("PriceChanged", priceChanged{newPrice(p.Price)})}, nil
	}
}

// priceMoved says whether a conflict's events change the price: such a
// conflict goes back to the shopper, who decides again at the new price
// (or not). Other writers' adds to carts only change the stock: those
// conflicts are retried on the new stock without asking anyone.
func priceMoved(c *client.Conflict) bool {
	for _, ev := range c.Events {
		if ev.GetType() == "PriceChanged" {
			return true
		}
	}
	return false
}

// lastPrice returns the price the conflict's events set last.
func lastPrice(c *client.Conflict) int64 {
	var price int64
	for _, ev := range c.Events {
		if ev.GetType() == "PriceChanged" {
			var e priceChanged
			if json.Unmarshal(ev.GetData(), &e) == nil {
				price = e.Price
			}
		}
	}
	return price
}

// StockView is the read model: each product's price and stock, with the
// revision of the last event applied (which makes applying idempotent).
type StockView struct {
	mu   sync.Mutex
	rows map[string]*row
}

type row struct {
	Price, Stock int64
	Revision     uint64
}

// Handle applies one delivered event unless it was applied already (a
// redelivery). The group delivers each product's events in order.
func (v *StockView) Handle(_ context.Context, ev *esdv1.RecordedEvent) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	r := v.rows[ev.GetStream()]
	if r != nil && ev.GetRevision() <= r.Revision {
		return nil
	}
	if r == nil {
		r = &row{}
		v.rows[ev.GetStream()] = r
	}
	p, err := Apply(Product{Name: "?", Price: r.Price, Stock: r.Stock}, ev)
	if err != nil {
		return client.Park(err) // a bad event: retrying will not mend it
	}
	r.Price, r.Stock, r.Revision = p.Price, p.Stock, ev.GetRevision()
	return nil
}

// Row returns the view's row of a product.
func (v *StockView) Row(stream string) (row, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	r, ok := v.rows[stream]
	if !ok {
		return row{}, false
	}
	return *r, true
}

// Config is one run of the scenario.
type Config struct {
	Products     int
	Stock        int64 // per product, at the start
	Shoppers     int
	Adds         int // add-to-cart attempts per shopper
	PriceChanges int
	// SnapshotEvery is the product category's snapshot policy.
	SnapshotEvery uint64
	// RunID keeps the run's streams and group apart from other runs' on
	// the same esd.
	RunID string
}

// Report is what a run did.
type Report struct {
	Adds, Confirmed, SoldOut   int64
	PriceRefusals              int64 // the shopper saw an older price (the view lagged)
	PriceConflicts             int64 // a price change collided with the add: surfaced
	RetriedAtNewPrice, Cancels int64 // what shoppers did about both
	ConflictsRetried           int64 // stock conflicts retried by the aggregate
	PriceChanges               int64
	Snapshots, SnapshotErrors  int64
	Waits, WaitsNotReached     int64
	StaleConfirms              int64 // confirmed before the view had the add: must be 0
	Events                     int   // replayed at the end, stock checked at each
	Final                      []FinalStock
}

// FinalStock is one product at the end.
type FinalStock struct {
	Stream                string
	Stock, View, Expected int64
	Head                  uint64
	Snapshots             int
	LoadedFromSnapshot    bool
	ConfirmedQty          int64
}

// Run plays the scenario against the esd c talks to, checks its
// invariants (it returns an error when one fails) and reports.
func Run(ctx context.Context, c *client.Client, cfg Config) (rep *Report, err error) {
	rep = &Report{}
	prefix := "product-" + cfg.RunID + "."
	streams := make([]string, cfg.Products)
	for i := range streams {
		streams[i] = fmt.Sprintf("%s%d", prefix, i+1)
	}
	if err := c.SetSnapshotPolicy(ctx, "product", &esdv1.SnapshotPolicy{Every: cfg.SnapshotEvery}); err != nil {
		return nil, fmt.Errorf("snapshot policy: %w", err)
	}

	// The read model, fed by a group over this run's products.
	group := "inventory-" + cfg.RunID
	if _, err := c.CreateGroup(ctx, &esdv1.Group{
		Name:       group,
		Target:     &esdv1.Group_All{All: &emptypb.Empty{}},
		Filter:     &esdv1.Filter{StreamPrefixes: []string{prefix}},
		Strategy:   esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM,
		AckTimeout: durationpb.New(10 * time.Second),
	}); err != nil {
		return nil, fmt.Errorf("create group: %w", err)
	}
	view := &StockView{rows: map[string]*row{}}
	memberCtx, stopMember := context.WithCancel(ctx)
	memberDone := make(chan error, 1)
	go func() { memberDone <- c.RunMember(memberCtx, group, view.Handle) }()
	defer func() {
		stopMember()
		if merr := <-memberDone; merr != nil {
			err = errors.Join(err, fmt.Errorf("stock view: %w", merr))
		}
		_ = c.DeleteGroup(context.WithoutCancel(ctx), group) // this run's: no other run uses it
	}()

	products := &client.Aggregate[Product]{
		Client:        c,
		New:           func() Product { return Product{} },
		Apply:         Apply,
		SnapshotType:  "product",
		SchemaVersion: 1,
		Encode:        func(p Product) ([]byte, error) { return json.Marshal(p) },
		Decode: func(b []byte) (Product, error) {
			var p Product
			return p, json.Unmarshal(b, &p)
		},
		OnSnapshot: func(stream string, rev uint64, err error) {
			if err != nil {
				atomic.AddInt64(&rep.SnapshotErrors, 1)
				return
			}
			atomic.AddInt64(&rep.Snapshots, 1)
		},
		OnConflict: func(c *client.Conflict) bool { return !priceMoved(c) },
		MaxRetries: 100, // many shoppers on few products: stock conflicts are the rule
		CacheSize:  cfg.Products,
	}
	defer products.Wait()

	var lastPosition atomic.Uint64
	notePosition := func(p uint64) {
		for {
			old := lastPosition.Load()
			if p <= old || lastPosition.CompareAndSwap(old, p) {
				return
			}
		}
	}
	for _, s := range streams {
		res, err := products.Update(ctx, s, func(Product) ([]*esdv1.ProposedEvent, error) {
			return []*esdv1.ProposedEvent{client.JSONEvent("ProductListed", listed{"item " + s[len(prefix):], 1000, cfg.Stock})}, nil
		})
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", s, err)
		}
		notePosition(res.Append.GetLastPosition())
	}

	confirmed := make([]atomic.Int64, len(streams)) // quantities confirmed per product
	var wg sync.WaitGroup
	errs := make(chan error, cfg.Shoppers+1)
	shoppersDone := make(chan struct{})

	// The admin changes prices while the shoppers shop.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rng := rand.New(rand.NewPCG(0, 7))
		for i := range cfg.PriceChanges {
			select {
			case <-shoppersDone:
				return
			case <-time.After(time.Duration(2+rng.IntN(6)) * time.Millisecond):
			}
			step := int64(10 * (1 + i%5))
			res, err := products.Update(ctx, streams[rng.IntN(len(streams))], changePrice(func(old int64) int64 {
				if rng.IntN(2) == 0 && old > step {
					return old - step
				}
				return old + step
			}))
			if err != nil {
				errs <- fmt.Errorf("change price: %w", err)
				return
			}
			atomic.AddInt64(&rep.PriceChanges, 1)
			atomic.AddInt64(&rep.ConflictsRetried, int64(res.Retries))
			notePosition(res.Append.GetLastPosition())
		}
	}()

	var shoppers sync.WaitGroup
	for s := range cfg.Shoppers {
		shoppers.Add(1)
		go func() {
			defer shoppers.Done()
			rng := rand.New(rand.NewPCG(uint64(s), 11))
			cart := fmt.Sprintf("cart-%s.%d", cfg.RunID, s)
			for range cfg.Adds {
				i := rng.IntN(len(streams))
				if err := shop(ctx, c, products, view, group, streams[i], cart, 1+rng.Int64N(3), rng, rep, &confirmed[i], notePosition); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	shoppers.Wait()
	close(shoppersDone)
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return rep, err
	}
	products.Wait()

	// The end: the view has everything, and it agrees with the streams.
	if _, reached, err := c.WaitForCheckpoint(ctx, group, lastPosition.Load(), 30*time.Second); err != nil {
		return rep, fmt.Errorf("wait for the view: %w", err)
	} else if !reached {
		return rep, fmt.Errorf("the view did not reach position %d within 30 s", lastPosition.Load())
	}
	var failed []string
	for i, s := range streams {
		f, err := final(ctx, c, products, view, s, cfg.Stock, confirmed[i].Load())
		if err != nil {
			return rep, err
		}
		rep.Final = append(rep.Final, f)
		rep.Events += int(f.Head) + 1
		if f.Stock < 0 || f.Stock != f.View || f.Stock != f.Expected {
			failed = append(failed, fmt.Sprintf("%s: stock %d, view %d, expected %d", s, f.Stock, f.View, f.Expected))
		}
	}
	if rep.StaleConfirms > 0 {
		failed = append(failed, fmt.Sprintf("%d adds confirmed before the view had them", rep.StaleConfirms))
	}
	if len(failed) > 0 {
		return rep, fmt.Errorf("invariants failed: %v", failed)
	}
	return rep, nil
}

// shop is one shopper adding qty of a product to their cart at the price
// the view shows, and deciding again (at the new price, or not at all)
// when the price moved; a confirmed add waits until the view has it.
func shop(ctx context.Context, c *client.Client, products *client.Aggregate[Product], view *StockView, group, stream, cart string,
	qty int64, rng *rand.Rand, rep *Report, confirmed *atomic.Int64, notePosition func(uint64)) error {
	atomic.AddInt64(&rep.Adds, 1)
	r, _ := view.Row(stream)
	price := r.Price
	for {
		res, err := products.Update(ctx, stream, addToCart(cart, qty, price))
		atomic.AddInt64(&rep.ConflictsRetried, int64(res.Retries))
		var moved *priceChangedError
		conflict, isConflict := client.IsWrongExpectedRevision(err)
		switch {
		case err == nil:
			notePosition(res.Append.GetLastPosition())
			// Confirm only once the view shows the add, so that the
			// shopper's next page has it.
			atomic.AddInt64(&rep.Waits, 1)
			_, reached, err := c.WaitForCheckpoint(ctx, group, res.Append.GetLastPosition(), 10*time.Second)
			if err != nil {
				return fmt.Errorf("wait for the view: %w", err)
			}
			if !reached {
				atomic.AddInt64(&rep.WaitsNotReached, 1)
			} else if r, _ := view.Row(stream); r.Revision < res.State.Head {
				atomic.AddInt64(&rep.StaleConfirms, 1)
			}
			atomic.AddInt64(&rep.Confirmed, 1)
			confirmed.Add(qty)
			return nil
		case errors.Is(err, errSoldOut):
			atomic.AddInt64(&rep.SoldOut, 1)
			return nil
		case errors.As(err, &moved):
			atomic.AddInt64(&rep.PriceRefusals, 1)
			price = moved.Price
		case isConflict && priceMoved(conflict):
			atomic.AddInt64(&rep.PriceConflicts, 1)
			price = lastPrice(conflict)
		default:
			return fmt.Errorf("add to cart: %w", err)
		}
		// The price moved: half the shoppers take it, half leave.
		if rng.IntN(2) == 0 {
			atomic.AddInt64(&rep.Cancels, 1)
			return nil
		}
		atomic.AddInt64(&rep.RetriedAtNewPrice, 1)
	}
}

// final checks a product at the end: a fresh load (from its latest
// snapshot), a full replay (stock never below zero at any revision: Apply
// refuses it), the view, and what the confirmed adds took.
func final(ctx context.Context, c *client.Client, products *client.Aggregate[Product], view *StockView, stream string, initial, taken int64) (FinalStock, error) {
	f := FinalStock{Stream: stream, Expected: initial - taken, ConfirmedQty: taken}
	// The same settings without the cache, so that it loads from esd.
	fresh := &client.Aggregate[Product]{Client: c, New: products.New, Apply: products.Apply,
		SnapshotType: products.SnapshotType, SchemaVersion: products.SchemaVersion, CacheSize: -1}
	decode := products.Decode
	fresh.Decode = func(b []byte) (Product, error) { f.LoadedFromSnapshot = true; return decode(b) }
	st, err := fresh.Load(ctx, stream)
	if err != nil {
		return f, err
	}
	var replayed Product
	for ev, err := range c.Read(ctx, stream) {
		if err != nil {
			return f, err
		}
		if replayed, err = Apply(replayed, ev); err != nil {
			return f, fmt.Errorf("replay: %w", err)
		}
	}
	if replayed != st.Value {
		return f, fmt.Errorf("%s: loaded %+v, replayed %+v", stream, st.Value, replayed)
	}
	snaps, err := c.ListSnapshots(ctx, stream)
	if err != nil {
		return f, err
	}
	r, _ := view.Row(stream)
	f.Stock, f.View, f.Head, f.Snapshots = st.Value.Stock, r.Stock, st.Head, len(snaps)
	return f, nil
}

// Print writes the report for people.
func (r *Report) Print(w io.Writer) {
	fmt.Fprintf(w, "add to cart: %d attempts: %d confirmed (each after the stock view had it: %d waits, %d timed out), %d sold out\n",
		r.Adds, r.Confirmed, r.Waits, r.WaitsNotReached, r.SoldOut)
	fmt.Fprintf(w, "price moved under a shopper: %d conflicts with a price change returned to the shopper, %d refusals of a price the view showed late; %d took the new price, %d cancelled\n",
		r.PriceConflicts, r.PriceRefusals, r.RetriedAtNewPrice, r.Cancels)
	fmt.Fprintf(w, "conflicts retried by the aggregate (only the stock had moved): %d; price changes by the admin while shoppers shopped: %d\n", r.ConflictsRetried, r.PriceChanges)
	fmt.Fprintf(w, "snapshots saved in the background: %d (%d failed)\n", r.Snapshots, r.SnapshotErrors)
	fmt.Fprintf(w, "%-20s %6s %6s %6s %6s %9s %s\n", "product", "head", "stock", "view", "sold", "snapshots", "loaded from snapshot")
	for _, f := range r.Final {
		fmt.Fprintf(w, "%-20s %6d %6d %6d %6d %9d %v\n", f.Stream, f.Head, f.Stock, f.View, f.ConfirmedQty, f.Snapshots, f.LoadedFromSnapshot)
	}
	fmt.Fprintf(w, "checked: %d events replayed, stock never below zero; final stock = initial - confirmed = the view's, for every product\n", r.Events)
}
