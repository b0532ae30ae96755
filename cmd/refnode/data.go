package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rpb "github.com/aerodb/authority/api/refnode/v1"
	"github.com/spf13/cobra"
)

func newPutCmd(o *options) *cobra.Command {
	var node string
	cmd := &cobra.Command{
		Use:   "put KEY VALUE",
		Short: "Write a key on the primary; returns once the write is acknowledged",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			addr, err := o.resolveNode(ctx, node)
			if err != nil {
				return err
			}
			c, done, err := nodeConn(addr)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Put(ctx, &rpb.PutRequest{Key: []byte(args[0]), Value: []byte(args[1])})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "acknowledged %s=%s epoch=%d lsn=%d commit=%d\n", args[0], args[1], r.Epoch, r.Lsn, r.CommitId)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node address (default: the domain's holder)")
	return cmd
}

func newGetCmd(o *options) *cobra.Command {
	var node string
	var bound uint64
	cmd := &cobra.Command{
		Use:   "get KEY",
		Short: "Read a key (the newest version with commit id ≤ the node's visible bound)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			addr, err := o.resolveNode(ctx, node)
			if err != nil {
				return err
			}
			c, done, err := nodeConn(addr)
			if err != nil {
				return err
			}
			defer done()
			r, err := c.Get(ctx, &rpb.GetRequest{Key: []byte(args[0]), ReadBound: bound})
			if err != nil {
				return err
			}
			if !r.Found {
				return fmt.Errorf("%s: not found (read bound %d on %s)", args[0], r.ReadBound, r.Role)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s=%s commit=%d (read bound %d, %s at epoch %d)\n", args[0], r.Value, r.CommitId, r.ReadBound, r.Role, r.Epoch)
			return nil
		},
	}
	cmd.Flags().StringVar(&node, "node", "", "node address (default: the domain's holder)")
	cmd.Flags().Uint64Var(&bound, "read-bound", 0, "read at this commit id (0: latest visible)")
	return cmd
}

func newWriterCmd(o *options) *cobra.Command {
	var acked, prefix string
	var interval time.Duration
	var writers, count int
	var quiet bool
	cmd := &cobra.Command{
		Use:   "writer",
		Short: "Write keys to whoever is primary, printing and recording every acknowledged write",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			ac, err := o.dial(ctx)
			if err != nil {
				return err
			}
			defer ac.Close()
			var out *os.File
			if acked != "" {
				if out, err = os.OpenFile(acked, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err != nil {
					return err
				}
				defer out.Close()
			}
			var mu sync.Mutex
			var seq atomic.Int64
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					var c rpb.RefNodeClient
					var done func()
					addr := ""
					for ctx.Err() == nil {
						i := seq.Add(1)
						if count > 0 && i > int64(count) {
							return
						}
						key, val := fmt.Sprintf("%s%07d", prefix, i), fmt.Sprintf("v%d-w%d-%d", i, w, time.Now().UnixNano())
						for ctx.Err() == nil {
							if c == nil {
								rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
								a, _, err := primaryAddr(rctx, ac, o.domain)
								cancel()
								if err == nil {
									c, done, err = nodeConn(a)
								}
								if err != nil {
									mu.Lock()
									fmt.Fprintf(cmd.ErrOrStderr(), "writer: no primary yet: %v\n", err)
									mu.Unlock()
									time.Sleep(500 * time.Millisecond)
									continue
								}
								addr = a
							}
							pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
							r, err := c.Put(pctx, &rpb.PutRequest{Key: []byte(key), Value: []byte(val)})
							cancel()
							if err != nil {
								mu.Lock()
								fmt.Fprintf(cmd.ErrOrStderr(), "writer: %s=%s NOT acknowledged by %s: %v\n", key, val, addr, err)
								mu.Unlock()
								done()
								c = nil
								time.Sleep(500 * time.Millisecond)
								continue // a new key: the old one may or may not have survived
							}
							mu.Lock()
							if out != nil {
								fmt.Fprintf(out, "%s %s %d %d %d\n", key, val, r.Epoch, r.Lsn, r.CommitId)
							}
							if !quiet {
								fmt.Fprintf(cmd.OutOrStdout(), "ack %s=%s from %s epoch=%d lsn=%d commit=%d\n", key, val, addr, r.Epoch, r.Lsn, r.CommitId)
							}
							mu.Unlock()
							break
						}
						if interval > 0 {
							select {
							case <-ctx.Done():
							case <-time.After(interval):
							}
						}
					}
				}()
			}
			wg.Wait()
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&acked, "acked", "", "append every acknowledged write to this file: KEY VALUE EPOCH LSN COMMIT")
	f.StringVar(&prefix, "prefix", "k", "key prefix")
	f.DurationVar(&interval, "interval", 200*time.Millisecond, "pause between writes of one writer")
	f.IntVar(&writers, "writers", 1, "concurrent writers")
	f.IntVar(&count, "count", 0, "stop after this many keys (0: until interrupted)")
	f.BoolVar(&quiet, "quiet", false, "do not print acknowledgements")
	return cmd
}

func newVerifyCmd(o *options) *cobra.Command {
	var acked, node string
	cmd := &cobra.Command{
		Use:   "verify --acked FILE",
		Short: "Check that every acknowledged write in FILE is readable, with its value, on the primary",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 60*time.Second)
			defer cancel()
			f, err := os.Open(acked)
			if err != nil {
				return err
			}
			defer f.Close()
			addr, err := o.resolveNode(ctx, node)
			if err != nil {
				return err
			}
			c, done, err := nodeConn(addr)
			if err != nil {
				return err
			}
			defer done()
			total, bad := 0, 0
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				fields := strings.Fields(sc.Text())
				if len(fields) < 2 {
					continue // a torn last line of a killed writer: never acknowledged to anyone
				}
				total++
				r, err := c.Get(ctx, &rpb.GetRequest{Key: []byte(fields[0])})
				switch {
				case err != nil:
					return err
				case !r.Found:
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "MISSING %s (acknowledged as %s)\n", fields[0], strings.Join(fields[1:], " "))
				case string(r.Value) != fields[1]:
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "WRONG VALUE %s: %s, acknowledged %s\n", fields[0], r.Value, fields[1])
				}
			}
			if err := sc.Err(); err != nil {
				return err
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d acknowledged writes are missing or wrong on %s", bad, total, addr)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "all %d acknowledged writes are on %s with their values\n", total, addr)
			if total == 0 {
				return errors.New("no acknowledged writes in " + acked)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&acked, "acked", "", "file written by `refnode writer --acked`")
	cmd.Flags().StringVar(&node, "node", "", "node address (default: the domain's holder)")
	return cmd
}
