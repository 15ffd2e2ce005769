package tlsconf

import (
	"context"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// PeerIdentity returns the identity of the client of a gRPC call made
// over mTLS: the Subject common name (CN) of its certificate, and only of
// a certificate the server verified against its client CA bundle. SANs
// are not read: one rule, the one `esctl certs dev --client NAME` writes.
// It returns false for a call without TLS, without a verified client
// certificate (--tls-client-auth=verify-if-given and none was given), or
// with an empty common name.
func PeerIdentity(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return "", false
	}
	cn := info.State.VerifiedChains[0][0].Subject.CommonName
	return cn, cn != ""
}
