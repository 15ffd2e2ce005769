package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/esdhq/esd/internal/auth"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// The permission matrix: every RPC, called by an identity holding one
// permission (or none) on the prefix "in-", on a stream inside that prefix
// and one outside, each existing and not. An allowed call gets OK or its
// domain error; a denied one PERMISSION_DENIED naming the permission, the
// same status whether the stream exists or not, and carrying none of the
// streams' names, counts or event data.

// authTestFile grants each identity "p-<perm>" perm on "in-" (admin on
// "*", which admin needs), "p-none" nothing, "root" everything.
func authTestFile() *auth.File {
	f := &auth.File{Roles: map[string][]auth.Grant{}, Identities: map[string]auth.Identity{}}
	for _, p := range auth.Permissions {
		prefix := "in-"
		if p == auth.Admin {
			prefix = auth.AllStreams
		}
		f.Roles["r-"+string(p)] = []auth.Grant{{Prefix: prefix, Permissions: []auth.Permission{p}}}
		f.Identities["p-"+string(p)] = auth.Identity{Roles: []string{"r-" + string(p)}}
	}
	f.Identities["p-none"] = auth.Identity{}
	f.Roles["root"] = []auth.Grant{{Prefix: auth.AllStreams, Permissions: auth.Permissions}}
	f.Identities["root"] = auth.Identity{Roles: []string{"root"}}
	return f
}

// authServer is a test server with security on, and a token per identity.
type authServer struct {
	*testServer
	authn  *auth.Authenticator
	tokens map[string]string
}

func newAuthServer(t *testing.T, f *auth.File, opts ...serverOption) *authServer {
	t.Helper()
	as := &authServer{tokens: map[string]string{}}
	for name := range f.Identities {
		tok, _, err := auth.NewToken(f, name, time.Now(), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		as.tokens[name] = tok
	}
	a, err := auth.NewStatic(f)
	if err != nil {
		t.Fatal(err)
	}
	as.authn = a
	as.testServer = newTestServer(t, append([]serverOption{withConfig(func(c *Config) { c.Auth = a })}, opts...)...)
	return as
}

// as is ctx carrying who's token.
func (as *authServer) as(ctx context.Context, who string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+as.tokens[who])
}

// matrixStreams: the prefix "in-" is granted, "out-" not; "-1" streams
// exist (with events, a snapshot and a group reading them), "-missing"
// ones do not.
var matrixStreams = []struct {
	name   string
	inside bool
	exists bool
}{{"in-1", true, true}, {"in-missing", true, false}, {"out-1", false, true}, {"out-missing", false, false}}

const secretData = "secret-payload"

// rpcCall makes one call naming stream (or the group reading it) and
// returns its status: the call's, the first streamed message's, or the
// in-band one of AppendStream.
type rpcCall func(ctx context.Context, c *grpc.ClientConn, stream string) error

var groupSeq atomic.Int64

// matrixCalls has one call per method of accessRules.
var matrixCalls = map[string]rpcCall{
	esdv1.StreamService_Append_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).Append(ctx, appendReq(s, xWrong, event("T", "x")))
		return err
	},
	esdv1.StreamService_AppendMulti_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).AppendMulti(ctx, &esdv1.AppendMultiRequest{Appends: []*esdv1.AppendRequest{appendReq(s, xWrong, event("T", "x"))}})
		return err
	},
	esdv1.StreamService_AppendStream_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		st, err := esdv1.NewStreamServiceClient(c).AppendStream(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(&esdv1.AppendStreamRequest{CorrelationId: []byte("1"), Append: appendReq(s, xWrong, event("T", "x"))}); err != nil {
			return err
		}
		resp, err := st.Recv()
		if err != nil {
			return err
		}
		_ = st.CloseSend()
		if e := resp.GetError(); e != nil {
			return status.FromProto(e).Err()
		}
		return nil
	},
	esdv1.StreamService_ReadStream_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		return firstMsg(esdv1.NewStreamServiceClient(c).ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: s}))
	},
	esdv1.StreamService_ReadAll_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		return firstMsg(esdv1.NewStreamServiceClient(c).ReadAll(ctx, &esdv1.ReadAllRequest{Filter: &esdv1.Filter{StreamPrefixes: []string{s}}}))
	},
	esdv1.StreamService_DeleteStream_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).DeleteStream(ctx, deleteReq(s, xExact(1<<40), false)) // a wrong revision: nothing is deleted
		return err
	},
	esdv1.StreamService_GetStream_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).GetStream(ctx, &esdv1.GetStreamRequest{Stream: s})
		return err
	},
	esdv1.StreamService_ListStreams_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		resp, err := esdv1.NewStreamServiceClient(c).ListStreams(ctx, &esdv1.ListStreamsRequest{Prefix: s})
		if err == nil && len(resp.GetStreams()) == 0 {
			return errFiltered
		}
		return err
	},
	esdv1.StreamService_SetStreamMetadata_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).SetStreamMetadata(ctx, &esdv1.SetStreamMetadataRequest{ // a wrong revision: nothing is written
			Target: &esdv1.SetStreamMetadataRequest_Stream{Stream: s}, ExpectedMetadataRevision: &esdv1.SetStreamMetadataRequest_Exact{Exact: 1 << 40}})
		return err
	},
	esdv1.StreamService_GetStreamMetadata_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewStreamServiceClient(c).GetStreamMetadata(ctx, &esdv1.GetStreamMetadataRequest{Target: &esdv1.GetStreamMetadataRequest_Stream{Stream: s}})
		return err
	},
	esdv1.StreamService_Subscribe_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		return firstMsg(esdv1.NewStreamServiceClient(c).Subscribe(ctx, &esdv1.SubscribeRequest{
			Target: &esdv1.SubscribeRequest_Stream{Stream: s}, From: &esdv1.SubscribeRequest_Start{Start: &emptypb.Empty{}}}))
	},
	esdv1.LockService_AcquireLease_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewLockServiceClient(c).AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: s, Owner: "m", Ttl: durationpb.New(time.Minute)})
		return err
	},
	esdv1.LockService_RenewLease_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewLockServiceClient(c).RenewLease(ctx, &esdv1.RenewLeaseRequest{Stream: s, FencingToken: 1 << 40, Ttl: durationpb.New(time.Minute)})
		return err
	},
	esdv1.LockService_ReleaseLease_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewLockServiceClient(c).ReleaseLease(ctx, &esdv1.ReleaseLeaseRequest{Stream: s, FencingToken: 1 << 40})
		return err
	},
	esdv1.LockService_GetLease_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewLockServiceClient(c).GetLease(ctx, &esdv1.GetLeaseRequest{Stream: s})
		return err
	},
	esdv1.LockService_ListLeases_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		resp, err := esdv1.NewLockServiceClient(c).ListLeases(ctx, &esdv1.ListLeasesRequest{Prefix: s})
		if err == nil && len(resp.GetLeases()) == 0 {
			return errFiltered
		}
		return err
	},
	esdv1.SnapshotService_SaveSnapshot_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{Stream: s, Revision: 0, Type: "S", Data: []byte("s")})
		return err
	},
	esdv1.SnapshotService_GetSnapshot_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).GetSnapshot(ctx, &esdv1.GetSnapshotRequest{Stream: s})
		return err
	},
	esdv1.SnapshotService_ListSnapshots_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).ListSnapshots(ctx, &esdv1.ListSnapshotsRequest{Stream: s})
		return err
	},
	esdv1.SnapshotService_DeleteSnapshots_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).DeleteSnapshots(ctx, &esdv1.DeleteSnapshotsRequest{Stream: s, BeforeRevision: 0})
		return err
	},
	esdv1.SnapshotService_Load_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		return firstMsg(esdv1.NewSnapshotServiceClient(c).Load(ctx, &esdv1.LoadRequest{Stream: s}))
	},
	esdv1.SnapshotService_SetSnapshotPolicy_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).SetSnapshotPolicy(ctx, &esdv1.SetSnapshotPolicyRequest{Category: "zz", Policy: &esdv1.SnapshotPolicy{Every: 10}})
		return err
	},
	esdv1.SnapshotService_GetSnapshotPolicy_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).GetSnapshotPolicy(ctx, &esdv1.GetSnapshotPolicyRequest{Category: "zz"})
		return err
	},
	esdv1.SnapshotService_DeleteSnapshotPolicy_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewSnapshotServiceClient(c).DeleteSnapshotPolicy(ctx, &esdv1.DeleteSnapshotPolicyRequest{Category: "zz"})
		return err
	},
	esdv1.AdminService_GetServerInfo_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewAdminServiceClient(c).GetServerInfo(ctx, &esdv1.GetServerInfoRequest{})
		return err
	},
	esdv1.AdminService_StartScavenge_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewAdminServiceClient(c).StartScavenge(ctx, &esdv1.StartScavengeRequest{})
		return err
	},
	esdv1.AdminService_GetScavenge_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewAdminServiceClient(c).GetScavenge(ctx, &esdv1.GetScavengeRequest{})
		return err
	},
	esdv1.AdminService_StopScavenge_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewAdminServiceClient(c).StopScavenge(ctx, &esdv1.StopScavengeRequest{})
		return err
	},
	esdv1.ConsumerGroupService_CreateGroup_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: &esdv1.Group{
			Name: fmt.Sprintf("new-%d", groupSeq.Add(1)), Target: &esdv1.Group_Stream{Stream: s}}})
		return err
	},
	esdv1.ConsumerGroupService_UpdateGroup_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).UpdateGroup(ctx, &esdv1.UpdateGroupRequest{Group: &esdv1.Group{
			Name: "g-" + s, Target: &esdv1.Group_Stream{Stream: s}}})
		return err
	},
	esdv1.ConsumerGroupService_DeleteGroup_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).DeleteGroup(ctx, &esdv1.DeleteGroupRequest{Name: "none-" + s})
		return err
	},
	esdv1.ConsumerGroupService_GetGroup_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).GetGroup(ctx, &esdv1.GetGroupRequest{Name: "g-" + s})
		return err
	},
	esdv1.ConsumerGroupService_ListGroups_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).ListGroups(ctx, &esdv1.ListGroupsRequest{})
		return err
	},
	esdv1.ConsumerGroupService_ListParked_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).ListParked(ctx, &esdv1.ListParkedRequest{Group: "g-" + s})
		return err
	},
	esdv1.ConsumerGroupService_ReplayParked_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).ReplayParked(ctx, &esdv1.ReplayParkedRequest{Group: "g-" + s})
		return err
	},
	esdv1.ConsumerGroupService_WaitForCheckpoint_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		_, err := esdv1.NewConsumerGroupServiceClient(c).WaitForCheckpoint(ctx, &esdv1.WaitForCheckpointRequest{
			Group: "g-" + s, Position: 1 << 40, Timeout: durationpb.New(time.Millisecond)})
		return err
	},
	esdv1.ConsumerGroupService_Join_FullMethodName: func(ctx context.Context, c *grpc.ClientConn, s string) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel() // leave
		st, err := esdv1.NewConsumerGroupServiceClient(c).Join(ctx)
		if err != nil {
			return err
		}
		if err := st.Send(joinMsg("g-" + s)); err != nil {
			return err
		}
		_, err = st.Recv()
		return err
	},
}

// xWrong is never a stream's revision: allowed appends fail with
// WRONG_EXPECTED_REVISION and write nothing, so streams keep existing or not.
var xWrong = xExact(1 << 40)

// errFiltered: ListStreams answered, without the stream.
var errFiltered = errors.New("filtered out")

func firstMsg[T any](st grpc.ServerStreamingClient[T], err error) error {
	if err != nil {
		return err
	}
	_, err = st.Recv()
	if errors.Is(err, io.EOF) {
		return nil // an empty answer
	}
	return err
}

// serverWideMethods need admin whatever the stream.
func serverWideMethod(m string) bool {
	r := accessRules[m]
	return r.perm == auth.Admin
}

func TestPermissionMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("the whole matrix: not with -short")
	}
	as := newAuthServer(t, authTestFile())
	ctx := as.as(testCtx(t), "root")
	snaps := esdv1.NewSnapshotServiceClient(as.conn)
	groups := esdv1.NewConsumerGroupServiceClient(as.conn)
	for _, s := range matrixStreams {
		if !s.exists {
			continue
		}
		for range 2 {
			if _, err := as.streams.Append(ctx, appendReq(s.name, xAny, event("T", secretData))); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := snaps.SaveSnapshot(ctx, &esdv1.SaveSnapshotRequest{Stream: s.name, Revision: 1, Type: "S", Data: []byte(secretData)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range matrixStreams {
		// Every name is leased for the whole test (a lease does not make
		// a stream), so that ListLeases has each to list or filter out,
		// and AcquireLease is refused STREAM_LEASED rather than granted.
		if _, err := esdv1.NewLockServiceClient(as.conn).AcquireLease(ctx, &esdv1.AcquireLeaseRequest{Stream: s.name, Owner: "root", Ttl: durationpb.New(5 * time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range matrixStreams { // groups exist for every stream name, so that Join tells streams apart only by permission
		if _, err := groups.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: &esdv1.Group{Name: "g-" + s.name, Target: &esdv1.Group_Stream{Stream: s.name}}}); err != nil {
			t.Fatal(err)
		}
	}

	callers := []string{"p-none"}
	for _, p := range auth.Permissions {
		callers = append(callers, "p-"+string(p))
	}
	methods := make([]string, 0, len(matrixCalls))
	for m := range matrixCalls {
		methods = append(methods, m)
	}
	slices.Sort(methods)
	for _, m := range methods {
		rule := accessRules[m]
		for _, who := range callers {
			t.Run(m[strings.LastIndexByte(m, '/')+1:]+"/"+who, func(t *testing.T) {
				denied := map[bool]*status.Status{} // inside → the denied status of an existing stream
				for _, s := range matrixStreams {
					err := matrixCalls[m](as.as(testCtx(t), who), as.conn, s.name)
					allowed := who == "p-"+string(rule.perm) && (s.inside || serverWideMethod(m))
					if m == esdv1.StreamService_ListStreams_FullMethodName || m == esdv1.LockService_ListLeases_FullMethodName {
						// Filtered, never refused: a stream (or its lease) is listed only to its readers.
						want := allowed && (s.exists || m == esdv1.LockService_ListLeases_FullMethodName)
						if (err == nil) != want || (err != nil && !errors.Is(err, errFiltered)) {
							t.Errorf("%s: %v, want listed=%t", s.name, err, want)
						}
						continue
					}
					st := status.Convert(err)
					t.Logf("%s: %v", s.name, st.Code())
					if allowed {
						if c := st.Code(); c == codes.PermissionDenied || c == codes.Unauthenticated {
							t.Errorf("%s: allowed call refused: %v", s.name, err)
						}
						continue
					}
					checkDenied(t, st, rule.perm, s.name)
					if prev, ok := denied[s.inside]; ok && !proto.Equal(prev.Proto(), st.Proto()) {
						t.Errorf("%s: denied status %v differs from that of the other stream %v: existence leaks", s.name, st.Proto(), prev.Proto())
					}
					denied[s.inside] = st
				}
			})
		}
	}
}

// checkDenied: PERMISSION_DENIED/PERMISSION_DENIED naming perm, and
// nothing of the stream: neither its name nor its data.
func checkDenied(t *testing.T, st *status.Status, perm auth.Permission, stream string) {
	t.Helper()
	if st.Code() != codes.PermissionDenied {
		t.Errorf("%s: %v, want PERMISSION_DENIED", stream, st.Err())
		return
	}
	var info *errdetails.ErrorInfo
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info.GetReason() != reasonPermissionDenied || info.GetDomain() != "esd" || info.GetMetadata()["permission"] != string(perm) {
		t.Errorf("%s: ErrorInfo %v, want reason PERMISSION_DENIED naming %s", stream, info, perm)
	}
	b, _ := proto.Marshal(st.Proto())
	for _, leak := range []string{stream, secretData} {
		if strings.Contains(string(b), leak) {
			t.Errorf("%s: denied status carries %q", stream, leak)
		}
	}
}

// TestAccessRulesCoverEveryMethod: every method of every esd.v1 service
// has a rule and a row in the matrix: a new RPC cannot go unchecked.
func TestAccessRulesCoverEveryMethod(t *testing.T) {
	var all []string
	for _, sd := range []*grpc.ServiceDesc{&esdv1.StreamService_ServiceDesc, &esdv1.SnapshotService_ServiceDesc,
		&esdv1.AdminService_ServiceDesc, &esdv1.ConsumerGroupService_ServiceDesc, &esdv1.LockService_ServiceDesc} {
		for _, m := range sd.Methods {
			all = append(all, "/"+sd.ServiceName+"/"+m.MethodName)
		}
		for _, m := range sd.Streams {
			all = append(all, "/"+sd.ServiceName+"/"+m.StreamName)
		}
	}
	for _, m := range all {
		if _, ok := accessRules[m]; !ok {
			t.Errorf("%s has no access rule", m)
		}
		if _, ok := matrixCalls[m]; !ok {
			t.Errorf("%s has no row in the permission matrix", m)
		}
		if openMethod(m) {
			t.Errorf("%s is open", m)
		}
	}
	if len(accessRules) != len(all) {
		t.Errorf("%d access rules for %d methods: a rule names no method", len(accessRules), len(all))
	}
	// Every method is served by a registered service the rules know.
	as := newAuthServer(t, authTestFile())
	for name, info := range as.srv.grpc.GetServiceInfo() {
		if strings.HasPrefix(name, "esd.") {
			for _, m := range info.Methods {
				if _, ok := accessRules["/"+name+"/"+m.Name]; !ok {
					t.Errorf("registered /%s/%s has no access rule", name, m.Name)
				}
			}
		}
	}
}

// TestAuthentication: no token, a malformed, a wrong, an expired token
// are UNAUTHENTICATED with their reason; health needs no credentials.
func TestAuthentication(t *testing.T) {
	f := authTestFile()
	expired, _, err := auth.NewToken(f, "root", time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	as := newAuthServer(t, f)
	root := as.tokens["root"]
	for _, tc := range []struct {
		name, header, reason string
	}{
		{"no token", "", reasonTokenMissing},
		{"not bearer", "Basic " + root, reasonTokenInvalid},
		{"garbage", "Bearer nope", reasonTokenInvalid},
		{"wrong secret", "Bearer " + root[:len(root)-1] + flipLast(root), reasonTokenInvalid},
		{"expired", "Bearer " + expired, reasonTokenExpired},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			if tc.header != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", tc.header)
			}
			_, err := as.streams.GetStream(ctx, &esdv1.GetStreamRequest{Stream: "in-1"})
			wantStatus(t, err, codes.Unauthenticated, tc.reason)
			err = firstMsg(as.streams.ReadStream(ctx, &esdv1.ReadStreamRequest{Stream: "in-1"}))
			wantStatus(t, err, codes.Unauthenticated, tc.reason)
		})
	}
	if _, err := as.health.Check(testCtx(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without credentials: %v", err)
	}
	// "bearer" in any case (RFC 9110).
	ctx := metadata.AppendToOutgoingContext(testCtx(t), "authorization", "bEaReR "+root)
	if _, err := as.admin.GetServerInfo(ctx, &esdv1.GetServerInfoRequest{}); err != nil {
		t.Fatal(err)
	}
}

// flipLast returns s's last base64url character with its top bit
// flipped. The last character of a 32-byte secret carries 4 bits and 2
// of padding, which a lenient decoder ignores: changing only those
// (A to B, say) would leave the secret right.
func flipLast(s string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	i := strings.IndexByte(alphabet, s[len(s)-1])
	return string(alphabet[i^32])
}

// wantStatus checks a status's code and ErrorInfo reason.
func wantStatus(t *testing.T, err error, code codes.Code, reason string) {
	t.Helper()
	st := status.Convert(err)
	got := ""
	for _, d := range st.Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			got = i.GetReason()
		}
	}
	if st.Code() != code || got != reason {
		t.Fatalf("status %v (reason %q), want %v/%s", st.Code(), got, code, reason)
	}
}
