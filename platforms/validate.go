package platforms

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
)

// CheckHTTPURL validates a configured http(s) URL of an endpoint rollbot
// calls: present, absolute, and without credentials (those belong in an
// environment variable, never in config or messages).
func CheckHTTPURL(raw string) error {
	if raw == "" {
		return errors.New("required")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a URL")
	}
	var errs []error
	if u.Scheme != "http" && u.Scheme != "https" {
		errs = append(errs, fmt.Errorf("scheme must be http or https, not %q", u.Scheme))
	}
	if u.Host == "" {
		errs = append(errs, errors.New("host required"))
	}
	if u.User != nil {
		errs = append(errs, errors.New("must not contain credentials; put a bearer token in the variable named by token_env"))
	}
	return errors.Join(errs...)
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// CheckSecretEnv validates a field naming an environment variable that
// holds a secret: a valid name, and set. The value is never shown.
func CheckSecretEnv(name string) error {
	if !envName.MatchString(name) {
		return fmt.Errorf("%q is not an environment variable name", name)
	}
	if os.Getenv(name) == "" {
		return fmt.Errorf("environment variable %s is not set", name)
	}
	return nil
}

// FieldErrors prefixes each error joined in err with "field: ".
func FieldErrors(field string, err error) []error {
	if err == nil {
		return nil
	}
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, fmt.Errorf("%s: %w", field, e))
		}
		return out
	}
	return []error{fmt.Errorf("%s: %w", field, err)}
}
