package server

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http"
	"strings"

	"github.com/esdhq/esd/internal/auth"
	"github.com/esdhq/esd/internal/subscription"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// Authentication and authorization (docs/api.md, "Authentication and
// permissions"). With Config.Auth set, every call of an esd.v1 service is
// authenticated (a bearer token, else a verified client certificate's
// Subject Common Name) and checked against accessRules before its handler
// looks anything up, so that a denied call learns nothing about the
// streams it names: whether they exist, their counts, their events.

// Reasons of authentication and authorization failures.
const (
	reasonTokenMissing       = "TOKEN_MISSING"
	reasonTokenInvalid       = "TOKEN_INVALID"
	reasonTokenExpired       = "TOKEN_EXPIRED"
	reasonCertificateUnknown = "CERTIFICATE_UNKNOWN"
	reasonPermissionDenied   = "PERMISSION_DENIED"
)

// accessRule is what one RPC needs. check, when set, decides on the
// request (unary) or the first message received (server-streaming);
// rules without check are decided in the handler (inHandler) or need
// only an authenticated caller (ListStreams filters its answer).
type accessRule struct {
	perm      auth.Permission
	check     func(p *auth.Principal, req any) bool
	inHandler bool
	// permOf, when set, is the permission a unary request needs where it
	// depends on the request, for the refusal to name; perm is then the
	// least of them (undecoded requests).
	permOf func(req any) auth.Permission
}

// needed is the permission a refusal of req names.
func (r accessRule) needed(req any) auth.Permission {
	if r.permOf != nil {
		return r.permOf(req)
	}
	return r.perm
}

// accessRules maps every method of every esd.v1 service to what it needs;
// TestAccessRulesCoverEveryMethod fails when a method is missing, and a
// missing one is denied (fail closed).
var accessRules = map[string]accessRule{
	// StreamService
	esdv1.StreamService_Append_FullMethodName: onStream(auth.Append, func(r *esdv1.AppendRequest) string { return r.GetStream() }),
	esdv1.StreamService_AppendMulti_FullMethodName: {perm: auth.Append, check: func(p *auth.Principal, req any) bool {
		for _, a := range req.(*esdv1.AppendMultiRequest).GetAppends() {
			if !p.Allowed(auth.Append, a.GetStream()) {
				return false
			}
		}
		return true
	}},
	esdv1.StreamService_AppendStream_FullMethodName: {perm: auth.Append, inHandler: true}, // each append, answered in band
	esdv1.StreamService_ReadStream_FullMethodName:   onStream(auth.Read, func(r *esdv1.ReadStreamRequest) string { return r.GetStream() }),
	esdv1.StreamService_ReadAll_FullMethodName: {perm: auth.Read, check: func(p *auth.Principal, req any) bool {
		return coversFilter(p, auth.Read, req.(*esdv1.ReadAllRequest).GetFilter().GetStreamPrefixes())
	}},
	esdv1.StreamService_DeleteStream_FullMethodName: onStream(auth.Delete, func(r *esdv1.DeleteStreamRequest) string { return r.GetStream() }),
	esdv1.StreamService_GetStream_FullMethodName:    onStream(auth.Read, func(r *esdv1.GetStreamRequest) string { return r.GetStream() }),
	esdv1.StreamService_ListStreams_FullMethodName:  {perm: auth.Read}, // answers only the streams the caller may read
	// A stream's retention limits hide its events, as a delete does; a
	// category's defaults reach streams not yet named: the operator's.
	esdv1.StreamService_SetStreamMetadata_FullMethodName: {perm: auth.Delete, permOf: metadataWritePerm, check: func(p *auth.Principal, req any) bool {
		r := req.(*esdv1.SetStreamMetadataRequest)
		if metadataWritePerm(r) == auth.Delete {
			return p.Allowed(auth.Delete, r.GetStream())
		}
		return p.Everything(auth.Admin)
	}},
	esdv1.StreamService_GetStreamMetadata_FullMethodName: {perm: auth.Read, check: func(p *auth.Principal, req any) bool {
		r := req.(*esdv1.GetStreamMetadataRequest)
		switch t := r.GetTarget().(type) {
		case *esdv1.GetStreamMetadataRequest_Stream:
			return p.Allowed(auth.Read, t.Stream)
		case *esdv1.GetStreamMetadataRequest_Category:
			return p.CoversCategory(auth.Read, t.Category)
		default:
			return p.Everything(auth.Read)
		}
	}},
	esdv1.StreamService_Subscribe_FullMethodName: {perm: auth.Subscribe, check: func(p *auth.Principal, req any) bool {
		r := req.(*esdv1.SubscribeRequest)
		switch t := r.GetTarget().(type) {
		case *esdv1.SubscribeRequest_Stream:
			return mayDeliver(p, auth.Subscribe, subscription.TargetStream, t.Stream, nil)
		case *esdv1.SubscribeRequest_Category:
			return mayDeliver(p, auth.Subscribe, subscription.TargetCategory, t.Category, nil)
		default: // $all, or no target (invalid: judged as the widest)
			return mayDeliver(p, auth.Subscribe, subscription.TargetAll, "", r.GetFilter().GetStreamPrefixes())
		}
	}},

	// SnapshotService: a stream's snapshots are its events in short.
	esdv1.SnapshotService_SaveSnapshot_FullMethodName:         onStream(auth.Append, func(r *esdv1.SaveSnapshotRequest) string { return r.GetStream() }),
	esdv1.SnapshotService_GetSnapshot_FullMethodName:          onStream(auth.Read, func(r *esdv1.GetSnapshotRequest) string { return r.GetStream() }),
	esdv1.SnapshotService_ListSnapshots_FullMethodName:        onStream(auth.Read, func(r *esdv1.ListSnapshotsRequest) string { return r.GetStream() }),
	esdv1.SnapshotService_DeleteSnapshots_FullMethodName:      onStream(auth.Delete, func(r *esdv1.DeleteSnapshotsRequest) string { return r.GetStream() }),
	esdv1.SnapshotService_Load_FullMethodName:                 onStream(auth.Read, func(r *esdv1.LoadRequest) string { return r.GetStream() }),
	esdv1.SnapshotService_SetSnapshotPolicy_FullMethodName:    serverWide(),
	esdv1.SnapshotService_GetSnapshotPolicy_FullMethodName:    serverWide(),
	esdv1.SnapshotService_DeleteSnapshotPolicy_FullMethodName: serverWide(),

	// AdminService: figures over every stream, and the data directory;
	// scavenges remove every stream's deleted events.
	esdv1.AdminService_GetServerInfo_FullMethodName: serverWide(),
	esdv1.AdminService_StartScavenge_FullMethodName: serverWide(),
	esdv1.AdminService_GetScavenge_FullMethodName:   serverWide(),
	esdv1.AdminService_StopScavenge_FullMethodName:  serverWide(),

	// ConsumerGroupService: managing groups and their parked events is
	// the operator's; a member, and a caller waiting for a group's
	// checkpoint, need subscribe on all the group reads.
	esdv1.ConsumerGroupService_CreateGroup_FullMethodName:  serverWide(),
	esdv1.ConsumerGroupService_UpdateGroup_FullMethodName:  serverWide(),
	esdv1.ConsumerGroupService_DeleteGroup_FullMethodName:  serverWide(),
	esdv1.ConsumerGroupService_GetGroup_FullMethodName:     serverWide(),
	esdv1.ConsumerGroupService_ListGroups_FullMethodName:   serverWide(),
	esdv1.ConsumerGroupService_ListParked_FullMethodName:   serverWide(),
	esdv1.ConsumerGroupService_ReplayParked_FullMethodName: serverWide(),
	esdv1.ConsumerGroupService_Join_FullMethodName:         {perm: auth.Subscribe, inHandler: true},
	// A group's progress over its streams: for those who may read them as
	// a member would (the application waiting on its read model).
	esdv1.ConsumerGroupService_WaitForCheckpoint_FullMethodName: {perm: auth.Subscribe, inHandler: true},

	// LockService: a lease fences the stream's appends and deletes, so
	// taking, renewing and releasing one needs append on the stream.
	esdv1.LockService_AcquireLease_FullMethodName: onStream(auth.Append, func(r *esdv1.AcquireLeaseRequest) string { return r.GetStream() }),
	esdv1.LockService_RenewLease_FullMethodName:   onStream(auth.Append, func(r *esdv1.RenewLeaseRequest) string { return r.GetStream() }),
	esdv1.LockService_ReleaseLease_FullMethodName: onStream(auth.Append, func(r *esdv1.ReleaseLeaseRequest) string { return r.GetStream() }),
	esdv1.LockService_GetLease_FullMethodName:     onStream(auth.Read, func(r *esdv1.GetLeaseRequest) string { return r.GetStream() }),
	esdv1.LockService_ListLeases_FullMethodName:   {perm: auth.Read}, // answers only the leases of streams the caller may read
}

// openServices need no credentials: health answers load balancers, and
// reflection describes the API, which is public (proto/esd/v1).
var openServices = []string{"/grpc.health.v1.Health/", "/grpc.reflection.v1.ServerReflection/", "/grpc.reflection.v1alpha.ServerReflection/"}

func onStream[R any](perm auth.Permission, stream func(R) string) accessRule {
	return accessRule{perm: perm, check: func(p *auth.Principal, req any) bool {
		r, ok := req.(R)
		return ok && p.Allowed(perm, stream(r))
	}}
}

// metadataWritePerm: delete on the stream for a stream's metadata; admin
// for a category's defaults, or no target (invalid: judged as the
// widest).
func metadataWritePerm(req any) auth.Permission {
	if r, ok := req.(*esdv1.SetStreamMetadataRequest); ok {
		if _, stream := r.GetTarget().(*esdv1.SetStreamMetadataRequest_Stream); stream {
			return auth.Delete
		}
	}
	return auth.Admin
}

func serverWide() accessRule {
	return accessRule{perm: auth.Admin, check: func(p *auth.Principal, _ any) bool { return p.Everything(auth.Admin) }}
}

// coversFilter: a read of every stream, narrowed to streams with any of
// prefixes (none: every stream), delivers only streams the caller may
// perm. Event type prefixes do not narrow which streams are delivered.
func coversFilter(p *auth.Principal, perm auth.Permission, prefixes []string) bool {
	if len(prefixes) == 0 {
		return p.Everything(perm)
	}
	for _, pr := range prefixes {
		if !p.CoversPrefix(perm, pr) {
			return false
		}
	}
	return true
}

// mayDeliver: a subscription (or group) of this target delivers only
// streams the caller may perm.
func mayDeliver(p *auth.Principal, perm auth.Permission, target subscription.TargetKind, name string, prefixes []string) bool {
	switch target {
	case subscription.TargetStream:
		return p.Allowed(perm, name)
	case subscription.TargetCategory:
		return p.CoversCategory(perm, name)
	default:
		return coversFilter(p, perm, prefixes)
	}
}

type principalKey struct{}

// principalFrom returns the authenticated caller of ctx; nil when security
// is off (Config.Auth nil), when every call is allowed.
func principalFrom(ctx context.Context) *auth.Principal {
	p, _ := ctx.Value(principalKey{}).(*auth.Principal)
	return p
}

// permissionDenied names the permission needed and nothing of the streams.
func permissionDenied(perm auth.Permission) error {
	st := status.New(codes.PermissionDenied, "permission denied: the call needs "+string(perm)+" on the streams it names or can deliver")
	if d, err := st.WithDetails(&errdetails.ErrorInfo{Domain: "esd", Reason: reasonPermissionDenied,
		Metadata: map[string]string{"permission": string(perm)}}); err == nil {
		st = d
	}
	return st.Err()
}

// authReason is the reason of an authentication failure.
func authReason(err error) string {
	switch {
	case errors.Is(err, auth.ErrTokenMissing):
		return reasonTokenMissing
	case errors.Is(err, auth.ErrTokenExpired):
		return reasonTokenExpired
	case errors.Is(err, auth.ErrCertificateUnknown):
		return reasonCertificateUnknown
	default:
		return reasonTokenInvalid
	}
}

func openMethod(method string) bool {
	for _, s := range openServices {
		if strings.HasPrefix(method, s) {
			return true
		}
	}
	return false
}

// authenticate finds the caller: a bearer token if the call carries one
// (it is explicit, so it wins over the connection's certificate), else the
// verified client certificate's Subject Common Name.
func (s *Server) authenticate(ctx context.Context) (*auth.Principal, error) {
	pol := s.cfg.Auth.Policy()
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if vals := md.Get("authorization"); len(vals) > 0 {
			tok, found := cutBearer(vals[0])
			if !found || len(vals) > 1 {
				return nil, auth.ErrTokenInvalid
			}
			return pol.Authenticate(tok, s.cfg.Auth.Now())
		}
	}
	if cn, ok := peerCommonName(ctx); ok {
		return pol.Certificate(cn)
	}
	return nil, auth.ErrTokenMissing
}

// cutBearer returns the token of an "Authorization: Bearer <token>" value
// (the scheme is case-insensitive, RFC 9110).
func cutBearer(v string) (string, bool) {
	const scheme = "bearer "
	if len(v) <= len(scheme) || !strings.EqualFold(v[:len(scheme)], scheme) {
		return "", false
	}
	return strings.TrimSpace(v[len(scheme):]), true
}

// peerCommonName is the Subject Common Name of the client certificate the
// TLS handshake verified against the client CA; no certificate, or one not
// verified, names no one.
func peerCommonName(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", false
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return "", false
	}
	return chainCommonName(ti.State.VerifiedChains)
}

func chainCommonName(chains [][]*x509.Certificate) (string, bool) {
	if len(chains) == 0 || len(chains[0]) == 0 || chains[0][0].Subject.CommonName == "" {
		return "", false
	}
	return chains[0][0].Subject.CommonName, true
}

// authorize authenticates the call and checks what its rule can decide
// before the request is known; it returns the caller and the rule.
func (s *Server) authorize(ctx context.Context, method string) (*auth.Principal, accessRule, error) {
	p, err := s.authenticate(ctx)
	if err != nil {
		reason := authReason(err)
		s.authFailures.WithLabelValues(reason).Inc()
		return nil, accessRule{}, withReason(codes.Unauthenticated, err.Error(), reason, "")
	}
	// Before the rule: refused calls count too, or a caller could probe
	// without bound.
	if !s.limits.allow(p, s.cfg.Auth.Now()) {
		s.authFailures.WithLabelValues(reasonRateLimited).Inc()
		return nil, accessRule{}, rateLimited()
	}
	r, ok := accessRules[method]
	if !ok {
		s.authFailures.WithLabelValues(reasonPermissionDenied).Inc()
		return nil, accessRule{}, permissionDenied(auth.Admin) // a method without a rule is nobody's
	}
	return p, r, nil
}

// authorizeUndecoded decides, for a unary request that did not decode or
// that the codec refused before decoding (prescan.go), whether the caller
// may hear why: gRPC decodes a unary request before it runs the
// interceptors, so without this an unauthenticated caller would learn the
// server's limits and the bytes of appends it has in flight, and its
// refusals would count against the limits. The caller must be
// authenticated (and within its rate), and hold the method's permission on
// some stream: the request, not decoded, names none to check.
func (s *Server) authorizeUndecoded(ctx context.Context, method string) error {
	if openMethod(method) {
		return nil
	}
	p, r, err := s.authorize(ctx, method)
	if err != nil {
		return err
	}
	if !p.Any(r.perm) {
		return s.deny(r.perm)
	}
	return nil
}

func (s *Server) deny(perm auth.Permission) error {
	if s.authFailures != nil {
		s.authFailures.WithLabelValues(reasonPermissionDenied).Inc()
	}
	return permissionDenied(perm)
}

func (s *Server) unaryAuth(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if openMethod(info.FullMethod) {
		return handler(ctx, req)
	}
	p, r, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	if r.check != nil && !r.check(p, req) {
		return nil, s.deny(r.needed(req))
	}
	return handler(context.WithValue(ctx, principalKey{}, p), req)
}

func (s *Server) streamAuth(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if openMethod(info.FullMethod) {
		return handler(srv, ss)
	}
	p, r, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &authStream{ServerStream: ss, ctx: context.WithValue(ss.Context(), principalKey{}, p), s: s, p: p, rule: r})
}

// authStream checks the first message of a call whose rule decides on the
// request (the server-streaming reads: one request each) before the
// handler sees it.
type authStream struct {
	grpc.ServerStream
	ctx     context.Context
	s       *Server
	p       *auth.Principal
	rule    accessRule
	checked bool
}

func (a *authStream) Context() context.Context { return a.ctx }

func (a *authStream) RecvMsg(m any) error {
	if err := a.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if a.rule.check != nil && !a.checked {
		a.checked = true
		if !a.rule.check(a.p, m) {
			return a.s.deny(a.rule.perm)
		}
	}
	return nil
}

// httpAdmin guards an HTTP handler (the profiler) when security is on: the
// caller is a bearer token's identity or the verified client certificate's,
// with admin.
func (s *Server) httpAdmin(h http.Handler) http.Handler {
	if s.cfg.Auth == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var (
			p   *auth.Principal
			err = auth.ErrTokenMissing
		)
		if v := r.Header.Get("Authorization"); v != "" {
			tok, ok := cutBearer(v)
			if ok {
				p, err = s.cfg.Auth.Policy().Authenticate(tok, s.cfg.Auth.Now())
			} else {
				err = auth.ErrTokenInvalid
			}
		} else if r.TLS != nil {
			if cn, ok := chainCommonName(r.TLS.VerifiedChains); ok {
				p, err = s.cfg.Auth.Policy().Certificate(cn)
			}
		}
		switch {
		case err != nil:
			w.Header().Set("WWW-Authenticate", `Bearer realm="esd"`)
			http.Error(w, err.Error(), http.StatusUnauthorized)
		case !p.Everything(auth.Admin):
			http.Error(w, "permission denied: needs admin", http.StatusForbidden)
		default:
			h.ServeHTTP(w, r)
		}
	})
}
