package kubetest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// The API server's audit log keeps every write made with a
// ServiceAccount's credentials — the kubeconfigs KubeconfigFor and its
// siblings write, which is what the code under test uses — so that a test
// counts writes on the platform's side: what the API server was asked to
// change and what it answered, not what the client believes it did. Writes
// of the admin user (the test itself, the controllers, kwok) and the
// access reviews (authorization.k8s.io, authentication.k8s.io: questions,
// nothing stored) are not kept.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
- level: None
  resources:
  - group: authorization.k8s.io
  - group: authentication.k8s.io
- level: Metadata
  userGroups: ["system:serviceaccounts"]
  verbs: [create, update, patch, delete, deletecollection]
- level: None
`

// auditFlags writes the policy into dir and returns the API server's
// flags that log by it to AuditLog. The log backend's default mode,
// blocking, writes an event before the request's handler returns.
func (c *Cluster) auditFlags() ([]string, error) {
	policy := filepath.Join(c.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	c.AuditLog = filepath.Join(c.Dir, "audit.log")
	return []string{"--audit-policy-file=" + policy, "--audit-log-path=" + c.AuditLog,
		"--audit-log-format=json", "--audit-log-mode=blocking"}, nil
}

// Write is one write request a ServiceAccount made, as the API server's
// audit log has it.
type Write struct {
	At   time.Time
	User string // system:serviceaccount:<namespace>:<name>
	// Verb is create, update, patch, delete or deletecollection.
	Verb                         string
	Group, Resource, Subresource string
	Namespace, Name              string
	Code                         int // the HTTP status the API server answered
}

// OK reports whether the API server made the write (a 2xx answer); a
// refused one (409 Conflict, 403 Forbidden...) changed nothing.
func (w Write) OK() bool { return w.Code >= 200 && w.Code < 300 }

// String is "patch deployments/myapp", "create jobs/rollbot-db-down-rb-1",
// "patch deployments/myapp/status".
func (w Write) String() string {
	s := w.Verb + " " + w.Resource
	if w.Name != "" {
		s += "/" + w.Name
	}
	if w.Subresource != "" {
		s += "/" + w.Subresource
	}
	return s
}

// auditEvent is the part of an audit.k8s.io/v1 Event that Writes reads.
type auditEvent struct {
	Stage string `json:"stage"`
	Verb  string `json:"verb"`
	User  struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		APIGroup    string `json:"apiGroup"`
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	StageTimestamp time.Time `json:"stageTimestamp"`
}

// Writes returns the ServiceAccounts' write requests in namespace ns (in
// every namespace and to cluster-scoped objects when ns is ""), answered
// or refused, in the order the API server finished them.
func (c *Cluster) Writes(ns string) ([]Write, error) {
	f, err := os.Open(c.AuditLog)
	if errors.Is(err, fs.ErrNotExist) { // nothing logged yet
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kubetest: read the audit log: %w", err)
	}
	defer f.Close()
	var out []Write
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var ev auditEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return nil, fmt.Errorf("kubetest: audit log %s: %w", c.AuditLog, err)
		}
		if ev.Stage != "ResponseComplete" || ev.ObjectRef == nil || (ns != "" && ev.ObjectRef.Namespace != ns) {
			continue
		}
		w := Write{At: ev.StageTimestamp, User: ev.User.Username, Verb: ev.Verb,
			Group: ev.ObjectRef.APIGroup, Resource: ev.ObjectRef.Resource, Subresource: ev.ObjectRef.Subresource,
			Namespace: ev.ObjectRef.Namespace, Name: ev.ObjectRef.Name}
		if ev.ResponseStatus != nil {
			w.Code = ev.ResponseStatus.Code
		}
		out = append(out, w)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kubetest: audit log %s: %w", c.AuditLog, err)
	}
	return out, nil
}
