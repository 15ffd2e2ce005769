// Command inventory plays a shop against esd with the Go client's
// Aggregate: many shoppers add products to their carts against limited
// stock while an admin changes prices.
//
//   - Each product is an aggregate (stream product-RUN.N) whose state is
//     rebuilt from its latest snapshot and the events after it; esd
//     advises a snapshot every 100 events (the example sets the product
//     category's policy) and the aggregate saves it in the background.
//   - An add to cart that collides with another shopper's (the stock
//     moved) is decided again on the new stock by the aggregate itself;
//     one that collides with a price change goes back to the shopper with
//     the events that changed the price, and the shopper takes the new
//     price or cancels.
//   - A stock view (the read model) is fed by a consumer group, idempotent
//     by revision; an add is confirmed to the shopper only once the view
//     has it (WaitForCheckpoint on the add's position).
//
// At the end it checks that no stock went below zero at any revision,
// that each product's stock is its initial stock minus the confirmed
// adds, and that the view agrees; it exits 1 otherwise.
//
// Without --addr it starts its own esd (--esd, default bin/esd) on a
// temporary directory and free ports, and stops it at the end:
//
//	make example
//	go run ./examples/inventory --addr 127.0.0.1:7400
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/esdhq/esd/client"
)

func main() {
	addr := flag.String("addr", "", "esd's gRPC address; empty: start --esd on a temporary directory")
	esd := flag.String("esd", "bin/esd", "the esd binary to start without --addr")
	cfg := Config{}
	flag.IntVar(&cfg.Products, "products", 5, "products")
	flag.Int64Var(&cfg.Stock, "stock", 500, "initial stock of each product")
	flag.IntVar(&cfg.Shoppers, "shoppers", 32, "concurrent shoppers")
	flag.IntVar(&cfg.Adds, "adds", 50, "add-to-cart attempts per shopper")
	flag.IntVar(&cfg.PriceChanges, "price-changes", 40, "price changes by the admin")
	flag.Uint64Var(&cfg.SnapshotEvery, "snapshot-every", 100, "the product category's snapshot policy")
	flag.Parse()
	cfg.RunID = strconv.FormatInt(time.Now().UnixMilli()%1e8, 36)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr, *esd, cfg); err != nil {
		log.Print(err)
		stop()
		os.Exit(1)
	}
}

func run(ctx context.Context, addr, esd string, cfg Config) (err error) {
	if addr == "" {
		var stopESD func() error
		addr, stopESD, err = startESD(ctx, esd)
		if err != nil {
			return err
		}
		defer func() { err = errors.Join(err, stopESD()) }()
	}
	c, err := client.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close() //nolint:errcheck // nothing to do about it on the way out
	fmt.Printf("%d shoppers, %d adds each, on %d products of %d in stock; %d price changes; snapshots every %d events\n",
		cfg.Shoppers, cfg.Adds, cfg.Products, cfg.Stock, cfg.PriceChanges, cfg.SnapshotEvery)
	start := time.Now()
	rep, err := Run(ctx, c, cfg)
	if rep != nil {
		rep.Print(os.Stdout)
	}
	if err != nil {
		return err
	}
	fmt.Printf("done in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

// startESD starts esd on a temporary directory and free loopback ports,
// waits until it answers, and returns its address and how to stop it
// (SIGTERM, then wait; the directory is removed).
func startESD(ctx context.Context, bin string) (string, func() error, error) {
	dir, err := os.MkdirTemp("", "esd-inventory-")
	if err != nil {
		return "", nil, err
	}
	grpcAddr, err1 := freePort()
	httpAddr, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		return "", nil, errors.Join(err, os.RemoveAll(dir))
	}
	// Warnings and errors only: the scenario's report is the output.
	cmd := exec.Command(bin, "--data-dir", dir, "--listen", grpcAddr, "--http-listen", httpAddr, "--log-level", "warn")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, errors.Join(fmt.Errorf("start %s (make build makes it): %w", bin, err), os.RemoveAll(dir))
	}
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		err := cmd.Wait()
		return errors.Join(err, os.RemoveAll(dir))
	}
	c, err := client.Dial(grpcAddr)
	if err != nil {
		return "", nil, errors.Join(err, stop())
	}
	defer c.Close() //nolint:errcheck // a probe's connection
	for deadline := time.Now().Add(15 * time.Second); ; {
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		_, err := c.ServerInfo(pctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return "", nil, errors.Join(fmt.Errorf("esd did not answer on %s: %w", grpcAddr, err), stop())
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Printf("started %s on %s (data in %s)\n", bin, grpcAddr, dir)
	return grpcAddr, stop, nil
}

// freePort returns a loopback address with a port free a moment ago.
func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}
