package compose

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

// sameShip compares parsed settings, which hold lists.
func sameShip(a, b Ship) bool { return reflect.DeepEqual(a, b) }

func TestRoutes(t *testing.T) {
	p, err := load(t, Options{Dir: "testdata/routes", Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	shop := p.Ship["shop"]
	want := []Route{
		{Port: 8080, Listen: ":80", ListenTLS: ":443", Host: []string{"shop.example.com", "*.shop.example.com"}, TLS: TLS{Auto: true}},
		{Port: 9090, Listen: ":80", ListenTLS: ":443", Host: []string{"admin.example.com"}, Path: []string{"/admin"}, TLS: TLS{Cert: "certs/admin.pem", Key: "certs/admin.key"}},
	}
	if !reflect.DeepEqual(shop.Routes, want) || shop.Port != 8080 || shop.Listen != ":80" || !shop.TLS.On() || shop.Health != "/up" {
		t.Errorf("shop x-ship = %+v\nwant routes %+v", shop, want)
	}
	if r := p.Ship["blog"].Routes; len(r) != 1 || r[0].Listen != ":80" || r[0].ListenTLS != "" || len(r[0].Path) != 2 {
		t.Errorf("blog routes = %+v, want :80 only with two paths", r)
	}
	if r := p.Ship["secure-only"].Routes; len(r) != 1 || r[0].Listen != "" || r[0].ListenTLS != ":8443" {
		t.Errorf("secure-only routes = %+v, want HTTPS on :8443 only", r)
	}
	if s := p.Ship["internal"]; s.Listen != "127.0.0.1:8081" || len(s.Routes) != 1 || s.Routes[0].Host != nil {
		t.Errorf("internal x-ship = %+v", s)
	}
}

func TestBadRoutes(t *testing.T) {
	_, err := load(t, Options{Dir: "testdata/badroutes", Name: "x"})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{
		`docker-compose.yml:7: service "b": x-ship: host example.com path / on port 80 is already routed for service "a"`,
		`docker-compose.yml:15: service "e": x-ship.listen ":443": port 443 is served over plain HTTP for service "d"`,
		`service "f": x-ship: host "http://f.example.com" is not a host name`,
		`service "f": x-ship: path "api" is not a path prefix`,
		`service "f": x-ship: tls needs both cert and key`,
		`service "f": x-ship: listen [:1 :2]: write one address, or with tls two`,
		`service "f": x-ship: routes[0].port is missing`,
		`service "g": x-ship: a job is not routed`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
}
