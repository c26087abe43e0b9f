package caddymodule

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.etcd.io/etcd/api/v3/authpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/caddy-apikeys/caddy-apikeys/internal/etcdtest"
	"github.com/caddy-apikeys/caddy-apikeys/keystore"
)

// secureCluster runs etcd with TLS, client certificates and
// authentication on, where user "caddy" (password "caddypw") may use the
// store's default prefix only.
func secureCluster(t *testing.T) (*etcdtest.Cluster, *etcdtest.TLSFiles) {
	t.Helper()
	files := etcdtest.NewTLSFiles(t, "caddy")
	c := etcdtest.StartWith(t, 1, etcdtest.Options{TLS: files})
	tc, err := files.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints(), TLS: tc, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	prefix := "/caddy-apikeys/"
	steps := []func() error{
		func() error { _, err := admin.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := admin.RoleAdd(ctx, "gateway"); return err },
		func() error {
			_, err := admin.RoleGrantPermission(ctx, "gateway", prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(authpb.READWRITE))
			return err
		},
		func() error { _, err := admin.UserAdd(ctx, "caddy", "caddypw"); return err },
		func() error { _, err := admin.UserGrantRole(ctx, "caddy", "gateway"); return err },
		func() error { _, err := admin.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("setting up etcd auth, step %d: %v", i, err)
		}
	}
	return c, files
}

func TestEtcdStoreWithTLSAndAuthentication(t *testing.T) {
	c, files := secureCluster(t)
	t.Setenv("APIKEYS_TEST_ETCD_PASSWORD", "caddypw")
	cfg := EtcdStore{
		Endpoints: c.Endpoints(),
		Username:  "caddy",
		Password:  "{env.APIKEYS_TEST_ETCD_PASSWORD}",
		TLS:       &EtcdTLS{CAFile: files.CA, CertFile: files.ClientCert, KeyFile: files.ClientKey},
		logger:    zap.NewNop(), clientLogger: zap.NewNop(),
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	store, release, err := cfg.Open()
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = release() }()
	ctx := context.Background()
	kr := keystore.NewKeyring(store, keystore.Options{FlushInterval: time.Hour})
	defer kr.Close()
	m, err := kr.Mint(ctx, keystore.Actor{Owner: keystore.Service("alice"), Operator: true}, keystore.KeyRequest{})
	if err != nil {
		t.Fatalf("Mint over TLS with authentication: %v", err)
	}
	if _, err := kr.VerifyWithin(ctx, m.Secret, nil, ""); err != nil {
		t.Fatalf("Verify: %v", err)
	}

	refused := map[string]struct {
		cfg  EtcdStore
		hint string
	}{
		"wrong password": {EtcdStore{Endpoints: cfg.Endpoints, Username: "caddy", Password: "nope", TLS: cfg.TLS},
			"refused the username or password"},
		"no client certificate": {EtcdStore{Endpoints: cfg.Endpoints, Username: "caddy", Password: "caddypw",
			TLS: &EtcdTLS{CAFile: files.CA}}, "TLS settings"},
		"CA not trusted": {EtcdStore{Endpoints: cfg.Endpoints, Username: "caddy", Password: "caddypw",
			TLS: &EtcdTLS{CertFile: files.ClientCert, KeyFile: files.ClientKey}}, "TLS settings"},
		"prefix not granted": {EtcdStore{Endpoints: cfg.Endpoints, Username: "caddy", Password: "caddypw", TLS: cfg.TLS,
			Prefix: "/elsewhere/"}, `refused access under "/elsewhere/"`},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			tc.cfg.DialTimeout = caddy.Duration(2 * time.Second)
			tc.cfg.logger, tc.cfg.clientLogger = zap.NewNop(), zap.NewNop()
			_, release, err := tc.cfg.Open()
			if err == nil {
				_ = release()
				t.Fatal("Open succeeded")
			}
			if !strings.Contains(err.Error(), tc.hint) {
				t.Fatalf("Open: %v; want it to say %q", err, tc.hint)
			}
		})
	}
}

func TestEtcdStoreValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  EtcdStore
		want string
	}{
		"no endpoints":      {EtcdStore{}, "endpoint"},
		"cert without key":  {EtcdStore{Endpoints: []string{"http://e:2379"}, TLS: &EtcdTLS{CertFile: "c.pem"}}, "go together"},
		"password, no user": {EtcdStore{Endpoints: []string{"http://e:2379"}, Password: "x"}, "without username"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}
