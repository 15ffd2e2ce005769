package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os/signal"
	"syscall"

	"github.com/esdhq/esd/client"
	esdv1 "github.com/esdhq/esd/proto/esd/v1"
)

func ExampleClient_Append() {
	c, err := client.Dial("127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	res, err := c.Append(ctx, "order-1", client.NoStream(), client.JSONEvent("OrderPlaced", map[string]int{"items": 3}))
	if conflict, ok := client.IsWrongExpectedRevision(err); ok {
		fmt.Printf("order-1 exists already, at revision %d\n", conflict.ActualHead)
		return
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("written at position", res.GetLastPosition())
}

func ExampleClient_Read() {
	c, err := client.Dial("127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	// The last 10 events of the stream, newest first.
	for ev, err := range c.Read(context.Background(), "order-1", client.Backward(), client.MaxCount(10)) {
		if client.IsNotFound(err) {
			fmt.Println("no such order")
			return
		}
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(ev.GetRevision(), ev.GetType())
	}
}

func ExampleClient_Subscribe() {
	c, err := client.Dial("127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	var last uint64 // a read model stores it with its state, to resume after it
	for se, err := range c.Subscribe(ctx, client.SubscribeCategory("order"), client.AfterPosition(last)) {
		if err != nil {
			log.Fatal(err)
		}
		switch {
		case se.CaughtUp:
			fmt.Println("history replayed; live from here")
		case se.Event != nil:
			fmt.Println(se.Event.GetStream(), se.Event.GetType())
			last = se.Event.GetPosition()
		}
	}
	fmt.Println("stopped after position", last)
}

func ExampleClient_RunMember() {
	c, err := client.Dial("127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	errMalformed := errors.New("malformed order")
	// Until SIGINT or SIGTERM; then the handlers in flight finish and
	// their acks go out before RunMember returns.
	err = c.RunMember(ctx, "mailer", func(ctx context.Context, ev *esdv1.RecordedEvent) error {
		if len(ev.GetData()) == 0 {
			return client.Park(fmt.Errorf("%s: %w", ev.GetId(), errMalformed)) // no use retrying
		}
		return sendMail(ctx, ev) // an error: delivered again
	}, client.Concurrency(8))
	if err != nil {
		log.Fatal(err)
	}
}

func sendMail(context.Context, *esdv1.RecordedEvent) error { return nil }
