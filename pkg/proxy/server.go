package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// ErrNoRoute is returned for a route name the Server does not hold.
var ErrNoRoute = errors.New("no such route")

// Server holds shipd's routes by name and serves each on its own listener. It owns the
// goroutines that serve them: Remove and Shutdown stop and wait for them.
type Server struct {
	log *slog.Logger

	mu     sync.Mutex
	routes map[string]*served
	closed bool
}

type served struct {
	route *Route
	done  chan struct{}
}

// NewServer returns an empty Server; log may be nil.
func NewServer(log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{log: log, routes: make(map[string]*served)}
}

// Add starts serving r. Its name must be new.
func (s *Server) Add(r *Route) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return fmt.Errorf("add route %s: %w", r.name, ErrClosed)
	}
	if _, ok := s.routes[r.name]; ok {
		return fmt.Errorf("add route %s: a route of that name exists", r.name)
	}
	sv := &served{route: r, done: make(chan struct{})}
	s.routes[r.name] = sv
	go func() {
		defer close(sv.done)
		// Nobody waits on Serve but Remove and Shutdown: its error is logged and shown
		// in the route's Status.
		if err := r.Serve(); err != nil {
			r.serveErr.Store(&err)
			s.log.Error("route stopped serving", "route", r.name, "err", err)
		}
	}()
	return nil
}

// Route returns the route called name.
func (s *Server) Route(name string) (*Route, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sv, ok := s.routes[name]
	if !ok {
		return nil, fmt.Errorf("route %s: %w", name, ErrNoRoute)
	}
	return sv.route, nil
}

// Status reports every route, sorted by name.
func (s *Server) Status() []Status {
	s.mu.Lock()
	list := make([]*Route, 0, len(s.routes))
	for _, sv := range s.routes {
		list = append(list, sv.route)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(list))
	for _, r := range list {
		out = append(out, r.Status())
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Remove shuts the route called name down (see Route.Shutdown) and forgets it.
func (s *Server) Remove(ctx context.Context, name string) error {
	s.mu.Lock()
	sv, ok := s.routes[name]
	delete(s.routes, name)
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("remove route %s: %w", name, ErrNoRoute)
	}
	return sv.stop(ctx)
}

// Shutdown shuts every route down at once and waits for them until ctx is done. The
// Server accepts no routes afterwards.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	all := make([]*served, 0, len(s.routes))
	for name, sv := range s.routes {
		all = append(all, sv)
		delete(s.routes, name)
	}
	s.mu.Unlock()
	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for i, sv := range all {
		wg.Go(func() { errs[i] = sv.stop(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (sv *served) stop(ctx context.Context) error {
	err := sv.route.Shutdown(ctx)
	select {
	case <-sv.done:
	case <-ctx.Done():
		return errors.Join(err, fmt.Errorf("route %s: %w", sv.route.name, ctx.Err()))
	}
	return err
}
