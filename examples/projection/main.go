// Command projection is a worked example of a read model fed by an esd
// consumer group: it keeps a catalogue of products (name, price) built
// from the events of the "product" category, in a JSON file.
//
// Delivery is at least once: after a crash, a timeout or a member leaving,
// an event may come again. The projection is idempotent because the file
// stores, with each product, the revision of the last event applied to
// it, and an event at or below that revision is acknowledged without
// being applied again. The state and the revisions are written together
// (write a temporary file, then rename it), before the events are
// acknowledged: a crash in between only means those events come back and
// are skipped.
//
// Run esd, then:
//
//	go run ./examples/projection --addr 127.0.0.1:7400 --file products.json
//	esctl append product-1 '{"name":"chair"}' --type ProductCreated
//	esctl append product-1 '{"price":120}' --type PriceSet
//
// Several copies may run at once with the by-stream strategy (each product
// then goes to one member, in order), each with its own file for the
// products it is given; with one copy, the file is the whole catalogue.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	esdv1 "github.com/esdhq/esd/proto/esd/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Product is one row of the read model.
type Product struct {
	Name     string  `json:"name"`
	Price    float64 `json:"price"`
	Revision uint64  `json:"revision"` // the last event applied: the idempotency key
}

// Catalogue is the read model: products by stream.
type Catalogue map[string]*Product

// Apply applies one event unless it was applied already. It reports
// whether the catalogue changed.
func (c Catalogue) Apply(ev *esdv1.RecordedEvent) (bool, error) {
	p := c[ev.GetStream()]
	if p != nil && ev.GetRevision() <= p.Revision {
		return false, nil // a redelivery: applied before
	}
	if p == nil {
		p = &Product{}
		c[ev.GetStream()] = p
	}
	var data struct {
		Name  *string  `json:"name"`
		Price *float64 `json:"price"`
	}
	if err := json.Unmarshal(ev.GetData(), &data); err != nil {
		return false, fmt.Errorf("%s@%d: %w", ev.GetStream(), ev.GetRevision(), err)
	}
	switch ev.GetType() {
	case "ProductCreated", "ProductRenamed":
		if data.Name != nil {
			p.Name = *data.Name
		}
	case "PriceSet":
		if data.Price != nil {
			p.Price = *data.Price
		}
	}
	p.Revision = ev.GetRevision()
	return true, nil
}

// Load reads the catalogue from path (empty if it does not exist).
func Load(path string) (Catalogue, error) {
	c := Catalogue{}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, err
	}
	return c, json.Unmarshal(b, &c)
}

// Save writes the catalogue to path atomically.
func (c Catalogue) Save(path string) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".catalogue-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) //nolint:errcheck // gone after the rename
	if _, err := tmp.Write(b); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Sync(); err != nil {
		return errors.Join(err, tmp.Close())
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:7400", "esd's gRPC address")
	file := flag.String("file", "products.json", "the read model's file")
	groupName := flag.String("group", "product-catalogue", "the consumer group")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *addr, *file, *groupName); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}

func run(ctx context.Context, addr, file, groupName string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close() //nolint:errcheck // nothing to do about it on the way out
	groups := esdv1.NewConsumerGroupServiceClient(conn)

	// The group is created once; later runs find it and resume after its
	// checkpoint.
	_, err = groups.CreateGroup(ctx, &esdv1.CreateGroupRequest{Group: &esdv1.Group{
		Name:       groupName,
		Target:     &esdv1.Group_Category{Category: "product"},
		AckTimeout: durationpb.New(30 * time.Second),
		Strategy:   esdv1.GroupStrategy_GROUP_STRATEGY_BY_STREAM,
	}})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create group: %w", err)
	}

	catalogue, err := Load(file)
	if err != nil {
		return fmt.Errorf("load %s: %w", file, err)
	}
	member, err := groups.Join(ctx)
	if err != nil {
		return err
	}
	if err := member.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Join{Join: &esdv1.JoinGroup{Group: groupName, Member: "projection"}}}); err != nil {
		return err
	}
	for {
		msg, err := member.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		d := msg.GetDelivery()
		if d == nil {
			continue // joined
		}
		ev := d.GetEvent()
		changed, err := catalogue.Apply(ev)
		if err != nil { // a poison event: park it rather than retry it forever
			log.Printf("parking %s: %v", ev.GetId(), err)
			if err := member.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Nack{Nack: &esdv1.Nack{
				EventIds: []string{ev.GetId()}, Action: esdv1.NackAction_NACK_ACTION_PARK, Reason: err.Error()}}}); err != nil {
				return err
			}
			continue
		}
		if changed {
			if err := catalogue.Save(file); err != nil { // before the ack: see the package comment
				return err
			}
		}
		if err := member.Send(&esdv1.JoinRequest{Content: &esdv1.JoinRequest_Ack{Ack: &esdv1.Ack{EventIds: []string{ev.GetId()}}}}); err != nil {
			return err
		}
	}
}
