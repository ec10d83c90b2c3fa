// Package awstest is TEST INFRASTRUCTURE, not part of rollbot's product: a
// local HTTP server that speaks the AWS *query* protocol for the few
// Elastic Load Balancing v2 and RDS operations rollbot calls, so that tests
// run the real aws-sdk-go-v2 clients (signing, retries, XML decoding)
// against it instead of mocking them.
//
// Requests are form-encoded (Action=…&Version=…&Foo.member.1=…) as the SDK
// sends them; answers are XML in AWS's response shapes (checked against the
// SDK's own request/response snapshots); errors are <ErrorResponse>
// documents with AWS's codes and HTTP statuses. Faults can be injected per
// action (Throttling, AccessDenied, anything), and every request is recorded
// for assertions.
//
// Only test code should import this package (by convention: nothing in the
// product does). It is not a faithful AWS: it checks what rollbot's adapters
// depend on (ARNs exist, weights in range, restore time within the
// restorable window, target instance ids unique) and nothing else. It never
// verifies request signatures; it only requires that a request is signed.
package awstest

import (
	"encoding/xml"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
)

// API versions of the two services, as the SDK sends them in Version=.
const (
	elbVersion = "2015-12-01"
	rdsVersion = "2014-10-31"
)

// Request is one recorded call.
type Request struct {
	Service     string // "elasticloadbalancing" or "rds"
	Action      string
	Params      url.Values
	AccessKeyID string // from the SigV4 Authorization header
	Failed      string // injected or validation error code, if the call failed
}

// Fault makes calls to Action fail with Code. Times < 0 means always.
type Fault struct {
	Action  string
	Code    string
	Message string // default: AWS-like text for the code
	Status  int    // default: 400 (403 for AccessDenied)
	Times   int
}

// Server is the fake endpoint. Point the SDK's BaseEndpoint at URL.
type Server struct {
	URL string

	srv *httptest.Server

	mu        sync.Mutex
	listeners map[string]*Listener
	rules     map[string]*Rule
	groups    map[string]*TargetGroup
	groupSeq  []string // insertion order for Describe without arns
	instances map[string]*DBInstance
	instOrder []string
	snapshots []*DBSnapshot
	faults    []*Fault
	hooks     map[string][]func()
	requests  []Request
	reqSeq    int
	// Now is the fake's clock for RDS times; default time.Now.
	now func() time.Time
	// RestoreDescribes is how many DescribeDBInstances calls see a restored
	// instance as "creating" before it turns "available".
	restoreDescribes int
	// renameDescribes: how many describes see a renamed instance as
	// "renaming" under its old identifier.
	renameDescribes int
}

// New starts a fake on a random loopback port. Close it when done.
func New() *Server {
	s := &Server{
		listeners:        map[string]*Listener{},
		rules:            map[string]*Rule{},
		groups:           map[string]*TargetGroup{},
		instances:        map[string]*DBInstance{},
		now:              time.Now,
		restoreDescribes: 3,
		renameDescribes:  2,
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// SetClock replaces the fake's clock (used for LatestRestorableTime checks
// and instance creation times).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.now = now
}

// SetRestoreDescribes sets how many DescribeDBInstances calls report a
// restored instance as "creating" before it is "available" (default 3).
func (s *Server) SetRestoreDescribes(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restoreDescribes = n
}

// SetRenameDescribes sets how many DescribeDBInstances calls see a renamed
// instance as "renaming" under its old identifier before the new one
// takes over (default 2).
func (s *Server) SetRenameDescribes(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.renameDescribes = n
}

// Inject adds a fault. Faults are matched in the order added.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Status == 0 {
		f.Status = http.StatusBadRequest
		if f.Code == "AccessDenied" {
			f.Status = http.StatusForbidden
		}
	}
	s.faults = append(s.faults, &f)
}

// After runs fn once, right after the next successful call to action has
// been served (before its answer reaches the client) (to simulate a concurrent change between two calls).
func (s *Server) After(action string, fn func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hooks == nil {
		s.hooks = map[string][]func(){}
	}
	s.hooks[action] = append(s.hooks[action], fn)
}

// Requests returns the recorded calls to action ("" for all), oldest first.
func (s *Server) Requests(action string) []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Request
	for _, r := range s.requests {
		if action == "" || r.Action == action {
			out = append(out, r)
		}
	}
	return out
}

// ---- ELBv2 model ----------------------------------------------------------

// WeightedGroup is one target group of a forward action.
type WeightedGroup struct {
	ARN    string
	Weight int
}

// Action is a listener or rule action. Only the fields rollbot touches are
// modelled: forward (with weights and stickiness) and fixed-response.
type Action struct {
	Type               string // "forward", "fixed-response"
	Order              int    // 0: not set
	Forward            []WeightedGroup
	StickinessEnabled  bool
	StickinessSeconds  int
	FixedStatusCode    string
	FixedContentType   string
	FixedMessageBody   string
	TargetGroupARNOnly bool // request used the short form TargetGroupArn=
}

// Listener is an ELBv2 listener.
type Listener struct {
	ARN             string
	LoadBalancerARN string
	Port            int
	Protocol        string
	DefaultActions  []Action
}

// Rule is a listener rule.
type Rule struct {
	ARN         string
	ListenerARN string
	Priority    string // "default" or a number
	PathPattern string
	Actions     []Action
}

// Target is a registered target and its health.
type Target struct {
	ID          string
	Port        int
	State       string // healthy, unhealthy, initial, draining, unused, unavailable
	Reason      string
	Description string
}

// TargetGroup is an ELBv2 target group.
type TargetGroup struct {
	ARN      string
	Name     string
	Port     int
	Protocol string
	Targets  []Target
	// Tags are the group's tags (AddTags, DescribeTags).
	Tags map[string]string
}

// AddListener stores a listener (replacing one with the same ARN).
func (s *Server) AddListener(l Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := l
	c.DefaultActions = slices.Clone(l.DefaultActions)
	s.listeners[l.ARN] = &c
}

// AddRule stores a rule.
func (s *Server) AddRule(r Rule) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := r
	c.Actions = slices.Clone(r.Actions)
	s.rules[r.ARN] = &c
}

// AddTargetGroup stores a target group with its targets.
func (s *Server) AddTargetGroup(g TargetGroup) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := g
	c.Targets = slices.Clone(g.Targets)
	c.Tags = maps.Clone(g.Tags)
	if _, ok := s.groups[g.ARN]; !ok {
		s.groupSeq = append(s.groupSeq, g.ARN)
	}
	s.groups[g.ARN] = &c
}

// SetTargetState changes the health state of every target in a group.
func (s *Server) SetTargetState(groupARN, state, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	g := s.groups[groupARN]
	if g == nil {
		return
	}
	for i := range g.Targets {
		g.Targets[i].State = state
		g.Targets[i].Reason = reason
	}
}

// GroupTags returns a copy of a target group's tags.
func (s *Server) GroupTags(arn string) map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if g := s.groups[arn]; g != nil {
		return maps.Clone(g.Tags)
	}
	return nil
}

// Listener returns a copy of the stored listener.
func (s *Server) Listener(arn string) (Listener, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.listeners[arn]
	if !ok {
		return Listener{}, false
	}
	c := *l
	c.DefaultActions = slices.Clone(l.DefaultActions)
	return c, true
}

// Rule returns a copy of the stored rule.
func (s *Server) Rule(arn string) (Rule, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.rules[arn]
	if !ok {
		return Rule{}, false
	}
	c := *r
	c.Actions = slices.Clone(r.Actions)
	return c, true
}

// SetListenerActions replaces a listener's default actions behind the
// client's back (a concurrent change, for compare-and-set tests).
func (s *Server) SetListenerActions(arn string, actions []Action) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.listeners[arn]; l != nil {
		l.DefaultActions = slices.Clone(actions)
	}
}

// ---- RDS model -------------------------------------------------------------

// DBInstance is an RDS DB instance.
type DBInstance struct {
	ID                   string
	Status               string // available, creating, ...
	Engine               string
	EngineVersion        string
	Class                string
	SubnetGroup          string
	SecurityGroups       []string
	ParameterGroup       string
	MultiAZ              bool
	PubliclyAccessible   bool
	Address              string
	Port                 int
	CreatedAt            time.Time
	BackupRetentionDays  int
	LatestRestorableTime time.Time
	Tags                 map[string]string
	RestoredFromSnapshot string    // set on instances the fake created by restore
	RestoredToTime       time.Time // set on point-in-time restores
	// RenamingTo is the new identifier of a rename applied immediately
	// and not finished yet (status "renaming").
	RenamingTo string
	// PendingRename is a rename requested without ApplyImmediately: RDS
	// keeps it for the next maintenance window (the fake never applies it).
	PendingRename string
	// Renames lists the identifiers this instance had before, oldest first.
	Renames               []string
	describesUntilCreated int
	describesUntilRenamed int
	addrSuffix            string // the DNS suffix a restore shares with its source
}

// DBSnapshot is an RDS DB snapshot.
type DBSnapshot struct {
	ID       string
	Instance string
	Type     string // "automated" or "manual"
	Status   string // "available", "creating"
	Created  time.Time
	Engine   string
	Port     int
}

// AddDBInstance stores an instance.
func (s *Server) AddDBInstance(in DBInstance) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := in
	if c.Status == "" {
		c.Status = "available"
	}
	if _, ok := s.instances[c.ID]; !ok {
		s.instOrder = append(s.instOrder, c.ID)
	}
	s.instances[c.ID] = &c
}

// DBInstance returns a copy of a stored instance.
func (s *Server) DBInstance(id string) (DBInstance, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if !ok {
		return DBInstance{}, false
	}
	return *in, true
}

// AddDBSnapshot stores a snapshot.
func (s *Server) AddDBSnapshot(sn DBSnapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := sn
	if c.Status == "" {
		c.Status = "available"
	}
	if c.Type == "" {
		c.Type = "manual"
	}
	s.snapshots = append(s.snapshots, &c)
}

// ---- HTTP ------------------------------------------------------------------

type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func errf(status int, code, format string, args ...any) *apiError {
	return &apiError{status: status, code: code, message: fmt.Sprintf(format, args...)}
}

var credRe = regexp.MustCompile(`Credential=([^/,\s]+)/[^/]+/[^/]+/([^/]+)/aws4_request`)

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		writeError(w, "", errf(400, "MalformedQueryString", "%v", err))
		return
	}
	for k, v := range r.URL.Query() {
		form[k] = append(form[k], v...)
	}
	req := Request{Action: form.Get("Action"), Params: form}
	switch form.Get("Version") {
	case elbVersion:
		req.Service = "elasticloadbalancing"
	case rdsVersion:
		req.Service = "rds"
	}
	m := credRe.FindStringSubmatch(r.Header.Get("Authorization"))

	s.mu.Lock()
	s.reqSeq++
	reqID := fmt.Sprintf("00000000-0000-4000-8000-%012d", s.reqSeq)
	var res any
	var aerr *apiError
	switch {
	case m == nil:
		aerr = errf(403, "MissingAuthenticationToken", "Request is missing Authentication Token")
	case req.Service == "":
		aerr = errf(400, "InvalidAction", "unknown API version %q", form.Get("Version"))
	default:
		req.AccessKeyID = m[1]
		aerr = s.fault(req)
		if aerr == nil {
			res, aerr = s.dispatch(req)
		}
	}
	if aerr != nil {
		req.Failed = aerr.code
	}
	s.requests = append(s.requests, req)
	var hook func()
	if aerr == nil && len(s.hooks[req.Action]) > 0 {
		hook = s.hooks[req.Action][0]
		s.hooks[req.Action] = s.hooks[req.Action][1:]
	}
	s.mu.Unlock()
	if aerr != nil {
		writeError(w, reqID, aerr)
		return
	}
	if hook != nil {
		hook() // the answer is already computed; the change lands before the client sees it
	}
	writeResult(w, req, reqID, res)
}

func (s *Server) fault(req Request) *apiError {
	for _, f := range s.faults {
		if f.Action != req.Action || f.Times == 0 {
			continue
		}
		if f.Times > 0 {
			f.Times--
		}
		msg := f.Message
		if msg == "" {
			switch f.Code {
			case "Throttling":
				msg = "Rate exceeded"
			case "AccessDenied":
				msg = fmt.Sprintf("User: arn:aws:sts::123456789012:assumed-role/rollbot/session is not authorized to perform: %s:%s because no identity-based policy allows the %s:%s action", req.Service, req.Action, req.Service, req.Action)
			default:
				msg = "injected fault"
			}
		}
		return &apiError{status: f.Status, code: f.Code, message: msg}
	}
	return nil
}

func (s *Server) dispatch(req Request) (any, *apiError) {
	switch req.Service + ":" + req.Action {
	case "elasticloadbalancing:DescribeListeners":
		return s.describeListeners(req.Params)
	case "elasticloadbalancing:DescribeRules":
		return s.describeRules(req.Params)
	case "elasticloadbalancing:DescribeTargetGroups":
		return s.describeTargetGroups(req.Params)
	case "elasticloadbalancing:DescribeTargetHealth":
		return s.describeTargetHealth(req.Params)
	case "elasticloadbalancing:ModifyListener":
		return s.modifyListener(req.Params)
	case "elasticloadbalancing:ModifyRule":
		return s.modifyRule(req.Params)
	case "elasticloadbalancing:AddTags":
		return s.addTags(req.Params)
	case "elasticloadbalancing:DescribeTags":
		return s.describeTags(req.Params)
	case "rds:DescribeDBSnapshots":
		return s.describeDBSnapshots(req.Params)
	case "rds:DescribeDBInstances":
		return s.describeDBInstances(req.Params)
	case "rds:RestoreDBInstanceFromDBSnapshot":
		return s.restoreFromSnapshot(req.Params)
	case "rds:RestoreDBInstanceToPointInTime":
		return s.restoreToPointInTime(req.Params)
	case "rds:ModifyDBInstance":
		return s.modifyDBInstance(req.Params)
	}
	return nil, errf(400, "InvalidAction", "The action %s is not valid for this web service.", req.Action)
}

type xmlErrorResponse struct {
	XMLName   xml.Name `xml:"ErrorResponse"`
	Type      string   `xml:"Error>Type"`
	Code      string   `xml:"Error>Code"`
	Message   string   `xml:"Error>Message"`
	RequestID string   `xml:"RequestId"`
}

func writeError(w http.ResponseWriter, reqID string, e *apiError) {
	typ := "Sender"
	if e.status >= 500 {
		typ = "Receiver"
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	w.WriteHeader(e.status)
	out, _ := xml.Marshal(xmlErrorResponse{Type: typ, Code: e.code, Message: e.message, RequestID: reqID})
	_, _ = w.Write(out)
}

// writeResult wraps res as <ActionResponse xmlns=…><ActionResult>res</ActionResult>
// <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata></ActionResponse>.
func writeResult(w http.ResponseWriter, req Request, reqID string, res any) {
	ns := "http://elasticloadbalancing.amazonaws.com/doc/" + elbVersion + "/"
	if req.Service == "rds" {
		ns = "http://rds.amazonaws.com/doc/" + rdsVersion + "/"
	}
	parts, ok := res.([]any)
	if !ok {
		parts = []any{res}
	}
	var inner []byte
	for _, p := range parts {
		b, err := xml.Marshal(p)
		if err != nil {
			writeError(w, reqID, errf(500, "InternalFailure", "marshal: %v", err))
			return
		}
		inner = append(inner, b...)
	}
	w.Header().Set("Content-Type", "text/xml")
	w.Header().Set("X-Amzn-Requestid", reqID)
	fmt.Fprintf(w, `<%sResponse xmlns="%s"><%sResult>%s</%sResult><ResponseMetadata><RequestId>%s</RequestId></ResponseMetadata></%sResponse>`,
		req.Action, ns, req.Action, inner, req.Action, reqID, req.Action)
}

// ---- query-protocol parameter helpers --------------------------------------

// list returns the values of prefix.<memberName>.1, .2, … (query lists).
func list(form url.Values, prefix, memberName string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[fmt.Sprintf("%s.%s.%d", prefix, memberName, i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

// structs returns the prefixes prefix.<memberName>.1, .2, … that have any field.
func structs(form url.Values, prefix, memberName string) []string {
	var out []string
	for i := 1; ; i++ {
		p := fmt.Sprintf("%s.%s.%d.", prefix, memberName, i)
		found := false
		for k := range form {
			if strings.HasPrefix(k, p) {
				found = true
				break
			}
		}
		if !found {
			return out
		}
		out = append(out, strings.TrimSuffix(p, "."))
	}
}
