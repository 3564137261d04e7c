package deploy

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// fakeCheck is a RegistryCheck that answers err for every registry, and counts.
type fakeCheck struct {
	err   error
	asked []string
}

func (c *fakeCheck) Ping(_ context.Context, host string) error {
	c.asked = append(c.asked, host)
	return c.err
}

// TestPreflightBeforeQuestion: the lock is checked (and taken) before the question: a
// host locked by someone else fails the deploy without asking, and while the question
// is asked the lock is this deploy's.
func TestPreflightBeforeQuestion(t *testing.T) {
	t.Run("locked: never asked", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
		lockHost(t, f.hosts[1], Holder{Who: "alice@desk", Machine: "desk", PID: 4242, Command: "deploy", SHA: shaB, Time: time.Now()})
		o := f.options(f.release(shaA))
		asked := false
		o.Confirm = func(context.Context, Preview) error { asked = true; return nil }
		sum, err := Run(context.Background(), o)
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("err = %v", err)
		}
		if asked {
			t.Error("the question was asked although a host is locked")
		}
		if len(sum.Hosts) != 2 || sum.Hosts[1].Result != ResultLocked || sum.Hosts[0].Result != ResultSkipped {
			t.Errorf("results = %+v", sum.Hosts)
		}
		assertUntouched(t, f.hosts[0])
	})
	t.Run("held while asked", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		o := f.options(f.release(shaA))
		var holder string
		o.Confirm = func(context.Context, Preview) error {
			holder, _ = f.hosts[0].file(root + "/.lock/holder.json")
			return nil
		}
		if _, err := Run(context.Background(), o); err != nil {
			t.Fatalf("deploy: %v\n%s", err, f.eventText())
		}
		if !strings.Contains(holder, `"who": "tester@laptop"`) || !strings.Contains(holder, shaA) {
			t.Errorf("holder.json while asked = %q, want this deploy's", holder)
		}
		if f.hosts[0].exists(root + "/.lock") {
			t.Error("the lock was not released at the end")
		}
	})
}

// TestOpenThenRun: a command that opens the hosts first (shipctl ship, before it
// builds) checks the registry, reaches the hosts and locks them in that order, and
// its deploy runs over the same connections: one dial per host for the whole run.
func TestOpenThenRun(t *testing.T) {
	f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
	check := &fakeCheck{}
	c, err := Open(context.Background(), OpenOptions{Target: f.target(), Check: check, Registries: []string{testRegistry}, SHA: shaA})
	if err != nil {
		t.Fatalf("Open: %v\n%s", err, f.eventText())
	}
	defer c.Close()
	if strings.Join(check.asked, ",") != testRegistry {
		t.Errorf("registries asked: %v", check.asked)
	}
	for _, h := range f.hosts {
		if !h.exists(root + "/.lock/holder.json") {
			t.Errorf("%s is not locked after Open", h.name)
		}
	}
	// The order of the preflight's events: registry, hosts, locks.
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(f.eventText()), "\n") {
		switch {
		case strings.Contains(line, "checking the registry"):
			order = append(order, "registry")
		case strings.Contains(line, "reachable: SFTP, Docker engine"):
			order = append(order, "host")
		case strings.Contains(line, "locked /srv/shop/.lock"):
			order = append(order, "lock")
		}
	}
	if got := strings.Join(order, ","); got != "registry,host,host,lock,lock" {
		t.Errorf("preflight order = %s, want registry,host,host,lock,lock\n%s", got, f.eventText())
	}

	o := f.options(f.release(shaA))
	o.Conn = c
	sum, err := Run(context.Background(), o)
	if err != nil {
		t.Fatalf("deploy: %v\n%s", err, f.eventText())
	}
	for i, h := range f.hosts {
		if h.dials != 1 {
			t.Errorf("%s dialled %d times, want once for the preflight and the deploy", h.name, h.dials)
		}
		if h.exists(root + "/.lock") {
			t.Errorf("%s: the lock was not released", h.name)
		}
		if sum.Hosts[i].Result != ResultDeployed || sum.Hosts[i].Took <= 0 {
			t.Errorf("%s: result %+v", h.name, sum.Hosts[i])
		}
	}
	if _, err := Run(context.Background(), o); err == nil {
		t.Error("a second deploy over the same Conn was accepted")
	}
}

// TestOpenFails: a registry that does not answer stops before any host is dialled;
// a locked host fails Open with ErrLocked and leaves the other host as it was; Close
// without a deploy releases the locks and leaves no folder behind.
func TestOpenFails(t *testing.T) {
	t.Run("registry", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		check := &fakeCheck{err: errors.New("registry.test:5000 answered GET /v2/ with 404 Not Found")}
		_, err := Open(context.Background(), OpenOptions{Target: f.target(), Check: check, Registries: []string{testRegistry}})
		if err == nil || !strings.Contains(err.Error(), "registry "+testRegistry+": registry.test:5000 answered") {
			t.Fatalf("err = %v", err)
		}
		if f.hosts[0].dials != 0 {
			t.Errorf("a host was dialled after the registry failed")
		}
	})
	t.Run("locked", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml", "deploy@web1", "deploy@web2")
		lockHost(t, f.hosts[1], Holder{Who: "alice@desk", Machine: "desk", PID: 4242, Command: "lock", Time: time.Now()})
		_, err := Open(context.Background(), OpenOptions{Target: f.target(), SHA: shaA})
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "deploy@web2 is locked by alice@desk") {
			t.Fatalf("err = %v", err)
		}
		assertUntouched(t, f.hosts[0])
	})
	t.Run("closed unused", func(t *testing.T) {
		f := newFixture(t, "docker-compose.yml")
		c, err := Open(context.Background(), OpenOptions{Target: f.target(), SHA: shaA})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		c.Close()
		assertUntouched(t, f.hosts[0])
	})
}
