package engine

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"golang.org/x/sync/errgroup"
)

// Logs calls fn with each line the project's containers (not one-off ones) logged,
// stdout and stderr apart. With o.Follow it keeps streaming until ctx ends or every
// container has stopped, and then returns nil. fn is called from one goroutine at a
// time; lines of one container come in order.
func (e *Engine) Logs(ctx context.Context, project string, o LogOptions, fn func(LogLine)) error {
	cs, err := e.list(ctx, project, true)
	if err != nil {
		return err
	}
	want := map[string]bool{}
	for _, s := range o.Services {
		want[s] = true
	}
	found := map[string]bool{}
	var picked []container.Summary
	for _, c := range cs {
		svc := c.Labels[labelService]
		if c.Labels[labelOneOff] == "True" || (len(want) > 0 && !want[svc]) {
			continue
		}
		found[svc] = true
		picked = append(picked, c)
	}
	for _, s := range o.Services {
		if !found[s] {
			return fmt.Errorf("logs: service %s of project %s has no container", s, project)
		}
	}
	sort.Slice(picked, func(i, j int) bool {
		a, b := picked[i], picked[j]
		if a.Labels[labelService] != b.Labels[labelService] {
			return a.Labels[labelService] < b.Labels[labelService]
		}
		return containerNumber(a) < containerNumber(b)
	})

	tail := o.Tail
	if tail == "" {
		tail = "all"
	}
	var mu sync.Mutex
	var opening sync.WaitGroup
	opening.Add(len(picked))
	if o.Attached != nil {
		go func() {
			opening.Wait()
			o.Attached()
		}()
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, c := range picked {
		svc, name := c.Labels[labelService], containerLabelName(c)
		g.Go(func() error {
			ins, err := e.inspect(gctx, c.ID)
			if err != nil {
				opening.Done()
				return fmt.Errorf("inspect container %s: %w", name, err)
			}
			rc, err := e.api.ContainerLogs(gctx, c.ID, client.ContainerLogsOptions{
				ShowStdout: true, ShowStderr: true, Follow: o.Follow, Tail: tail, Timestamps: o.Timestamps,
			})
			opening.Done()
			if err != nil {
				return fmt.Errorf("logs of container %s: %w", name, err)
			}
			defer rc.Close()
			err = readLines(rc, ins.Config != nil && ins.Config.Tty, func(stream, line string) {
				mu.Lock()
				defer mu.Unlock()
				fn(LogLine{Service: svc, Container: name, Stream: stream, Text: line})
			})
			if err != nil {
				return fmt.Errorf("logs of container %s: %w", name, err)
			}
			return nil
		})
	}
	err = g.Wait()
	if o.Follow && ctx.Err() != nil {
		return nil // following ends with ctx
	}
	return err
}

// maxFrame bounds one frame of a log stream; the engine sends at most a few KiB.
const maxFrame = 16 << 20

// readLines splits a container's log stream into lines. Without a TTY the engine
// multiplexes stdout and stderr in frames (an 8-byte header: stream, 3 zero bytes,
// big-endian length); with one the stream is raw stdout.
func readLines(r io.Reader, tty bool, fn func(stream, line string)) error {
	if tty {
		br := bufio.NewReader(r)
		for {
			line, err := br.ReadString('\n')
			if line != "" {
				fn("stdout", strings.TrimRight(line, "\r\n"))
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
		}
	}
	var partial [3]bytes.Buffer // by stream: stdin (unused), stdout, stderr
	names := [3]string{"stdout", "stdout", "stderr"}
	flush := func() {
		for i := range partial {
			if partial[i].Len() > 0 {
				fn(names[i], partial[i].String())
				partial[i].Reset()
			}
		}
	}
	br := bufio.NewReader(r)
	var hdr [8]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			flush()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return errors.New("log stream ends inside a frame header")
			}
			return err
		}
		stream := int(hdr[0])
		size := int64(binary.BigEndian.Uint32(hdr[4:]))
		if stream == 3 { // the engine's own error, as the stream's last frame
			msg, _ := io.ReadAll(io.LimitReader(br, size))
			flush()
			return fmt.Errorf("engine: %s", strings.TrimSpace(string(msg)))
		}
		if stream > 2 {
			return fmt.Errorf("log stream has unknown stream %d", stream)
		}
		if size > maxFrame {
			return fmt.Errorf("log stream has a %d-byte frame", size)
		}
		payload := make([]byte, size)
		if _, err := io.ReadFull(br, payload); err != nil {
			flush()
			return fmt.Errorf("log stream ends inside a frame: %w", err)
		}
		for len(payload) > 0 {
			i := bytes.IndexByte(payload, '\n')
			if i < 0 {
				partial[stream].Write(payload)
				break
			}
			partial[stream].Write(payload[:i])
			fn(names[stream], strings.TrimSuffix(partial[stream].String(), "\r"))
			partial[stream].Reset()
			payload = payload[i+1:]
		}
	}
}
