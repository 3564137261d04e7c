package notify

import (
	"context"
	"sync"
)

// Queue posts a command's messages to a Webhook in the background, one after the
// other in the order given: a message that fails is reported, never the command's
// failure. Wait waits for every message posted.
type Queue struct {
	w      *Webhook
	scrub  func(string) string
	report func(m Message, err error)

	mu   sync.Mutex
	last chan struct{}
	wg   sync.WaitGroup
}

// NewQueue returns a Queue for w (nil or without a URL: Post does nothing). scrub
// removes secrets from each message's errors before it is sent (nil: none); report,
// when set, is told how each message went (the error as Send returned it: scrub it
// before showing it).
func NewQueue(w *Webhook, scrub func(string) string, report func(m Message, err error)) *Queue {
	if scrub == nil {
		scrub = func(s string) string { return s }
	}
	return &Queue{w: w, scrub: scrub, report: report}
}

// Post sends m after the messages posted before it. It does not wait; a cancelled
// ctx does not stop it (the end of a deploy must be told even after Ctrl-C).
func (q *Queue) Post(ctx context.Context, m Message) {
	if q.w == nil || q.w.URL == "" {
		return
	}
	ctx = context.WithoutCancel(ctx)
	m.Error = q.scrub(m.Error)
	for i := range m.Results {
		m.Results[i].Error = q.scrub(m.Results[i].Error)
	}
	q.mu.Lock()
	prev := q.last
	done := make(chan struct{})
	q.last = done
	q.mu.Unlock()
	q.wg.Add(1)
	go func() {
		defer q.wg.Done()
		defer close(done)
		if prev != nil {
			<-prev
		}
		err := q.w.Send(ctx, m)
		if q.report != nil {
			q.report(m, err)
		}
	}()
}

// Wait waits until every message posted has been sent or given up on.
func (q *Queue) Wait() { q.wg.Wait() }
