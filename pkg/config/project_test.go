package config

import (
	"errors"
	"strings"
	"testing"
)

// TestProjectPerEnvironment: each environment gets <app>-<env> as its compose
// project unless it names one; a name that is not a project name is refused at its line.
func TestProjectPerEnvironment(t *testing.T) {
	c, err := Parse("ship.yaml", []byte(`app: shop
environments:
  staging:
    hosts: [deploy@web1]
    path: /srv/shop-staging
  Prod.EU:
    hosts: [deploy@web1]
    path: /srv/shop
    project: shop
`))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Environments["staging"].ProjectName(c.App); got != "shop-staging" {
		t.Errorf("staging's project = %q, want shop-staging", got)
	}
	if got := c.Environments["Prod.EU"].ProjectName(c.App); got != "shop" {
		t.Errorf("Prod.EU's project = %q, want the override shop", got)
	}
	_, err = Parse("ship.yaml", []byte("app: shop\nenvironments:\n  prod:\n    hosts: [deploy@web1]\n    path: /srv/shop\n    project: Shop.Prod\n"))
	if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ship.yaml:6:") || !strings.Contains(err.Error(), `"Shop.Prod" is not a valid compose project name`) {
		t.Errorf("a bad project: %v", err)
	}
}

// TestSharedPlacesRefused: two environments with a host in common may share neither
// the folder nor the compose project; the message names both environments and lines.
// On different hosts the same folder is fine.
func TestSharedPlacesRefused(t *testing.T) {
	_, err := Parse("ship.yaml", []byte(`app: shop
environments:
  staging:
    hosts: [deploy@web1]
    path: /srv/shop
    project: shop
  prod:
    hosts: [deploy@web2, deploy@web1]
    path: /srv/shop
    project: shop
`))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("shared path and project: err = %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		"ship.yaml:9:", "environments.prod.path: /srv/shop on deploy@web1 is also environment staging's (line 5)",
		"ship.yaml:10:", "environments.prod: the compose project shop on deploy@web1 is also environment staging's (line 6)",
		`"project: shop-prod"`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	if strings.Count(msg, "is also environment") != 2 {
		t.Errorf("want one problem per kind:\n%s", msg)
	}

	// Two environment names that make one default project on one host.
	_, err = Parse("ship.yaml", []byte("app: shop\nenvironments:\n  prod.eu:\n    hosts: [deploy@web1]\n    path: /srv/a\n  prodeu:\n    hosts: [deploy@web1]\n    path: /srv/b\n"))
	if err == nil || !strings.Contains(err.Error(), "ship.yaml:6:") || !strings.Contains(err.Error(), "compose project shop-prodeu") {
		t.Errorf("one default project for two environments: %v", err)
	}

	// Other hosts: the same folder and the default projects are fine.
	if _, err := Parse("ship.yaml", []byte("app: shop\nenvironments:\n  staging:\n    hosts: [deploy@web1]\n    path: /srv/shop\n  prod:\n    hosts: [deploy@web2]\n    path: /srv/shop\n    project: shop\n")); err != nil {
		t.Errorf("one folder on two hosts: %v", err)
	}
}
