package testenv

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
)

var (
	sweepLocalOnce  sync.Once
	sweepEngineOnce sync.Once
)

// Sweep removes what test processes that are gone left behind (a run killed at its
// timeout, or by Ctrl-C): the folders and processes of their ledgers, and with an
// engine client, their compose projects and images and every engine object labelled
// with their LabelOwner. It runs once per process without an engine and once with
// one; Main, Docker and SSHD call it. What it removes is printed to stderr.
func Sweep(cli *client.Client) {
	once := &sweepLocalOnce
	if cli != nil {
		once = &sweepEngineOnce
	}
	once.Do(func() {
		dir, err := ledgerDir()
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), Scale(2*time.Minute))
		defer cancel()
		sweep(ctx, cli, dir)
	})
}

// sweep is Sweep of the ledgers in dir, every time it is called.
func sweep(ctx context.Context, cli *client.Client, dir string) {
	gone := map[string]bool{}
	ledgers, _ := filepath.Glob(filepath.Join(dir, "*.ledger"))
	for _, path := range ledgers {
		if sweepLedger(ctx, cli, path) {
			gone[strings.TrimSuffix(filepath.Base(path), ".ledger")] = true
		}
	}
	if cli != nil {
		sweepLabelled(ctx, cli, dir, gone)
	}
}

// sweepLedger removes what one ledger lists when its owner is gone, and then the
// ledger, with an engine client (without one, the ledger is kept for the engine's
// objects). It reports whether the owner was gone.
func sweepLedger(ctx context.Context, cli *client.Client, path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	// Held by its owner while it runs, or by another sweeper: not ours to sweep.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		return false
	}
	defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	items, err := readLedger(path)
	if err != nil {
		return false
	}
	owner := strings.TrimSuffix(filepath.Base(path), ".ledger")
	var last time.Time // the owner's last write: it was alive then
	if fi, err := f.Stat(); err == nil {
		last = fi.ModTime()
	}
	for _, it := range items {
		kind, name := it[0], it[1]
		switch {
		case kind == "dir":
			if _, err := os.Stat(name); err == nil {
				sweptf(owner, "folder %s", name)
				os.RemoveAll(name)
			}
		case kind == "proc":
			killProc(owner, name)
		case cli == nil:
		case kind == "project":
			removeProject(ctx, cli, owner, name)
		case kind == "registry":
			removeRegistryImages(ctx, cli, owner, name, last)
		case kind == "image":
			if removeImage(cli, name) == nil {
				sweptf(owner, "image %s", name)
			}
		}
	}
	if cli != nil {
		os.Remove(path)
	}
	return true
}

// killProc kills the process "pid start" when it still runs (the same start time:
// not another process that got its id since).
func killProc(owner, name string) {
	p, s, _ := strings.Cut(name, " ")
	pid, err1 := strconv.Atoi(p)
	start, err2 := strconv.ParseUint(s, 10, 64)
	if err1 != nil || err2 != nil || pid <= 1 {
		return
	}
	if now, err := procStart(pid); err == nil && now == start {
		sweptf(owner, "process %d", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// RemoveProjects removes the containers, networks, volumes and images of the compose
// project name and of the projects named name-<something> (an app's per-environment
// projects): a test's cleanup that does not depend on how the app names its projects.
func RemoveProjects(ctx context.Context, cli *client.Client, name string) {
	removeProject(ctx, cli, "", name)
}

// removeProject removes the containers, networks, volumes and images of the compose
// project name, or of a project named name-<something> (an app's per-environment
// projects, shipctl test's <app>-test-<random>).
func removeProject(ctx context.Context, cli *client.Client, owner, name string) {
	match := func(labels map[string]string) bool {
		p := labels["com.docker.compose.project"]
		return p == name || strings.HasPrefix(p, name+"-")
	}
	f := make(client.Filters).Add("label", "com.docker.compose.project")
	removeObjects(ctx, cli, owner, f, match)
	// Images named after the project (shipctl test's <project>/<service>).
	imgs, err := cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return
	}
	for _, img := range imgs.Items {
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, name+"-") || strings.HasPrefix(tag, name+"/") {
				if removeImage(cli, tag) == nil {
					sweptf(owner, "image %s", tag)
				}
			}
		}
	}
}

// removeRegistryImages removes the images tagged for the registry at addr that were
// created before the owner's last ledger write, unless something listens at addr: a
// registry started later on the same port belongs to another test.
func removeRegistryImages(ctx context.Context, cli *client.Client, owner, addr string, before time.Time) {
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		return // a registry answers there now: another test's, its images are not ours
	}
	imgs, err := cli.ImageList(ctx, client.ImageListOptions{})
	if err != nil {
		return
	}
	for _, img := range imgs.Items {
		if !time.Unix(img.Created, 0).Before(before) {
			continue
		}
		for _, tag := range img.RepoTags {
			if strings.HasPrefix(tag, addr+"/") && removeImage(cli, tag) == nil {
				sweptf(owner, "image %s", tag)
			}
		}
	}
}

// sweepLabelled removes the engine objects labelled with an owner that is gone: one
// whose ledger this sweep found gone, or whose ledger in dir no process holds.
func sweepLabelled(ctx context.Context, cli *client.Client, dir string, gone map[string]bool) {
	var owner string
	match := func(labels map[string]string) bool {
		id, ok := labels[LabelOwner]
		if !ok {
			return false
		}
		if _, seen := gone[id]; !seen {
			gone[id] = ownerGone(dir, id)
		}
		owner = id
		return gone[id]
	}
	f := make(client.Filters).Add("label", LabelOwner)
	removeObjects(ctx, cli, "", f, match)
	imgs, err := cli.ImageList(ctx, client.ImageListOptions{All: true, Filters: f})
	if err != nil {
		return
	}
	for _, img := range imgs.Items {
		if match(img.Labels) && removeImage(cli, img.ID) == nil {
			sweptf(owner, "image %s %v", short12(img.ID), img.RepoTags)
		}
	}
}

// removeObjects removes the containers, then the networks and volumes, that filter
// lists and match accepts.
func removeObjects(ctx context.Context, cli *client.Client, owner string, filter client.Filters, match func(map[string]string) bool) {
	who := func(labels map[string]string) string {
		if owner != "" {
			return owner
		}
		return labels[LabelOwner]
	}
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err == nil {
		for _, c := range cs.Items {
			if match(c.Labels) {
				_, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
				if err == nil || cerrdefs.IsNotFound(err) {
					sweptf(who(c.Labels), "container %s", strings.Join(c.Names, ","))
				}
			}
		}
	}
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: filter})
	if err == nil {
		for _, n := range ns.Items {
			if match(n.Labels) {
				if _, err := cli.NetworkRemove(ctx, n.ID, client.NetworkRemoveOptions{}); err == nil {
					sweptf(who(n.Labels), "network %s", n.Name)
				}
			}
		}
	}
	vs, err := cli.VolumeList(ctx, client.VolumeListOptions{Filters: filter})
	if err == nil {
		for _, v := range vs.Items {
			if match(v.Labels) {
				if _, err := cli.VolumeRemove(ctx, v.Name, client.VolumeRemoveOptions{Force: true}); err == nil {
					sweptf(who(v.Labels), "volume %s", v.Name)
				}
			}
		}
	}
}

func sweptf(owner, format string, a ...any) {
	if owner == "" {
		return // a test's own cleanup (RemoveProjects): nothing to report
	}
	fmt.Fprintf(os.Stderr, "testenv: swept %s left by the ended test process %s\n", fmt.Sprintf(format, a...), owner)
}

func short12(id string) string {
	id = strings.TrimPrefix(id, "sha256:")
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
