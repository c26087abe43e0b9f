package ops

import (
	"cmp"
	"net/http"

	"github.com/caddy-apikeys/caddy-apikeys/keystore"
	"github.com/caddy-apikeys/caddy-apikeys/wire"
)

// OwnerRef names an owner in admin requests and CLI flags: a password
// user by default, a service, or a user of another source.
type OwnerRef struct {
	// User is a password user's name, or, with Source, a token identity.
	User string `json:"user,omitempty"`
	// Service is an operator-made owner, instead of User.
	Service string `json:"service,omitempty"`
	// Source of User when it is not a password user, e.g.
	// "jwt:https://idp.example" (as key listings show it).
	Source string `json:"source,omitempty"`
}

// Owner resolves the reference; set reports whether it names anyone.
func (r OwnerRef) Owner() (o keystore.Owner, set bool, err error) {
	switch {
	case r.User == "" && r.Service == "" && r.Source == "":
		return keystore.Owner{}, false, nil
	case r.User != "" && r.Service != "":
		return keystore.Owner{}, true, wire.Fail(http.StatusBadRequest, "give either a user or a service, not both")
	case r.Service != "" && r.Source != "" && r.Source != keystore.SourceService:
		return keystore.Owner{}, true, wire.Fail(http.StatusBadRequest, "a service has no other source")
	case r.Service != "":
		o = keystore.Service(r.Service)
	case r.User == "":
		return keystore.Owner{}, true, wire.Fail(http.StatusBadRequest, "a source needs a user")
	default:
		o = keystore.Owner{Source: cmp.Or(r.Source, keystore.SourcePassword), Name: r.User}
	}
	if err := o.Check(); err != nil {
		return o, true, wire.Fail(http.StatusBadRequest, err.Error())
	}
	return o, true, nil
}

// required is the owner r names, which must be someone.
func (r OwnerRef) required() (keystore.Owner, error) {
	o, set, err := r.Owner()
	if err == nil && !set {
		err = wire.Fail(http.StatusBadRequest, "a user or a service is required")
	}
	return o, err
}
