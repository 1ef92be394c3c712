// Package licence defines the licence a plugin publisher embeds in a
// module: who publishes it, who may run it, until when, on which hosts and
// for how many calls. The licence lives in a custom section placed after
// the signature section, so the signature covers it and a licensee cannot
// edit it without invalidating the module.
package licence

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/kmeter/kmeter/internal/plugin/sign"
)

// SectionName is the custom section that carries the licence (JSON).
const SectionName = "kmeter.licence"

// DefaultHostIDFile is where the host id is read from unless configured.
const DefaultHostIDFile = "/etc/machine-id"

// Sentinel errors of [Licence.Check], matched with errors.Is.
var (
	// ErrExpired: the licence's not-after time has passed.
	ErrExpired = errors.New("licence expired")
	// ErrWrongHost: the licence does not list this host.
	ErrWrongHost = errors.New("licence not valid on this host")
	// ErrInvalid: the licence section or file is malformed.
	ErrInvalid = errors.New("invalid licence")
)

// Licence is the terms under which a module may run.
type Licence struct {
	// Publisher names who publishes the plugin.
	Publisher string `json:"publisher"`
	// Licensee names who may run it.
	Licensee string `json:"licensee"`
	// NotAfter is the instant after which the licence is expired.
	NotAfter time.Time `json:"not_after"`
	// Hosts lists the host ids (machine ids) the module may run on; an
	// empty list allows every host.
	Hosts []string `json:"hosts,omitempty"`
	// MaxCalls caps the number of plugin calls per load; 0 means no cap.
	// The engine enforces it (see [Counter]).
	MaxCalls uint64 `json:"max_calls,omitempty"`
}

// Validate reports every missing or bad field at once.
func (l Licence) Validate() error {
	var errs []error
	if strings.TrimSpace(l.Publisher) == "" {
		errs = append(errs, errors.New("publisher is empty"))
	}
	if strings.TrimSpace(l.Licensee) == "" {
		errs = append(errs, errors.New("licensee is empty"))
	}
	if l.NotAfter.IsZero() {
		errs = append(errs, errors.New(`not_after is missing (an RFC 3339 time such as "2027-01-01T00:00:00Z")`))
	}
	for i, h := range l.Hosts {
		if strings.TrimSpace(h) == "" {
			errs = append(errs, fmt.Errorf("hosts[%d] is empty", i))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nil
}

// Check reports whether the licence allows running on host at now.
func (l Licence) Check(host string, now time.Time) error {
	if now.After(l.NotAfter) {
		return fmt.Errorf("%w: licence for %q from %q ended %s (now %s); ask the publisher for a renewed module",
			ErrExpired, l.Licensee, l.Publisher, l.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if len(l.Hosts) > 0 && !slices.Contains(l.Hosts, host) {
		return fmt.Errorf("%w: host id %q is not among the %d host ids licensed to %q; ask the publisher to add it",
			ErrWrongHost, host, len(l.Hosts), l.Licensee)
	}
	return nil
}

// Marshal encodes l as the section payload.
func (l Licence) Marshal() ([]byte, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	return json.Marshal(l)
}

// Parse decodes a licence (section payload or licence file, both JSON);
// unknown fields are errors so a typo cannot silently drop a restriction.
func Parse(b []byte) (Licence, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var l Licence
	if err := dec.Decode(&l); err != nil {
		return Licence{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if dec.More() {
		return Licence{}, fmt.Errorf("%w: trailing data after the licence object", ErrInvalid)
	}
	if err := l.Validate(); err != nil {
		return Licence{}, err
	}
	return l, nil
}

// ReadFile reads a licence file (JSON with the fields of [Licence]).
func ReadFile(path string) (Licence, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Licence{}, fmt.Errorf("read licence: %w", err)
	}
	l, err := Parse(b)
	if err != nil {
		return Licence{}, fmt.Errorf("licence file %s: %w", path, err)
	}
	return l, nil
}

// Embed returns module with l in its licence section (replacing any
// earlier licence). Sign the result afterwards: embedding invalidates an
// existing signature.
func Embed(module []byte, l Licence) ([]byte, error) {
	p, err := l.Marshal()
	if err != nil {
		return nil, err
	}
	out, err := sign.SetCustomSection(module, SectionName, p)
	if err != nil {
		return nil, fmt.Errorf("embed licence: %w", err)
	}
	return out, nil
}

// Extract returns the licence embedded in module and whether there is
// one. It does not verify the signature: use it on verified modules, or
// for display.
func Extract(module []byte) (Licence, bool, error) {
	p, ok, err := sign.CustomSection(module, SectionName)
	if err != nil || !ok {
		return Licence{}, false, err
	}
	l, err := Parse(p)
	if err != nil {
		return Licence{}, true, fmt.Errorf("licence section: %w", err)
	}
	return l, true, nil
}

// ReadHostID reads a host id file such as /etc/machine-id.
func ReadHostID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read host id: %w (set the host id explicitly if this host has no %s)", err, path)
	}
	id := strings.TrimSpace(string(b))
	if id == "" {
		return "", fmt.Errorf("read host id: %s is empty", path)
	}
	return id, nil
}
