package awstest

import (
	"encoding/xml"
	"maps"
	"regexp"
	"slices"
	"strconv"
)

type xmlTuple struct {
	TargetGroupArn string `xml:"TargetGroupArn"`
	Weight         int    `xml:"Weight"`
}

type xmlStickiness struct {
	Enabled         bool `xml:"Enabled"`
	DurationSeconds int  `xml:"DurationSeconds,omitempty"`
}

type xmlForward struct {
	TargetGroups []xmlTuple     `xml:"TargetGroups>member"`
	Stickiness   *xmlStickiness `xml:"TargetGroupStickinessConfig,omitempty"`
}

type xmlFixed struct {
	StatusCode  string `xml:"StatusCode"`
	ContentType string `xml:"ContentType,omitempty"`
	MessageBody string `xml:"MessageBody,omitempty"`
}

type xmlAction struct {
	Type           string      `xml:"Type"`
	Order          int         `xml:"Order,omitempty"`
	TargetGroupArn string      `xml:"TargetGroupArn,omitempty"`
	ForwardConfig  *xmlForward `xml:"ForwardConfig,omitempty"`
	FixedResponse  *xmlFixed   `xml:"FixedResponseConfig,omitempty"`
}

// toXMLActions renders actions the way ELBv2 does: a forward action always
// carries ForwardConfig, plus TargetGroupArn when it has a single group.
func toXMLActions(actions []Action) []xmlAction {
	var out []xmlAction
	for _, a := range actions {
		x := xmlAction{Type: a.Type, Order: a.Order}
		switch a.Type {
		case "forward":
			f := &xmlForward{Stickiness: &xmlStickiness{Enabled: a.StickinessEnabled, DurationSeconds: a.StickinessSeconds}}
			for _, g := range a.Forward {
				f.TargetGroups = append(f.TargetGroups, xmlTuple{TargetGroupArn: g.ARN, Weight: g.Weight})
			}
			if len(a.Forward) == 1 {
				x.TargetGroupArn = a.Forward[0].ARN
			}
			x.ForwardConfig = f
		case "fixed-response":
			x.FixedResponse = &xmlFixed{StatusCode: a.FixedStatusCode, ContentType: a.FixedContentType, MessageBody: a.FixedMessageBody}
		}
		out = append(out, x)
	}
	return out
}

type xmlListener struct {
	ListenerArn     string      `xml:"ListenerArn"`
	LoadBalancerArn string      `xml:"LoadBalancerArn"`
	Port            int         `xml:"Port"`
	Protocol        string      `xml:"Protocol"`
	DefaultActions  []xmlAction `xml:"DefaultActions>member"`
}

type xmlListeners struct {
	XMLName   xml.Name      `xml:"Listeners"`
	Listeners []xmlListener `xml:"member"`
}

func toXMLListener(l *Listener) xmlListener {
	return xmlListener{ListenerArn: l.ARN, LoadBalancerArn: l.LoadBalancerARN, Port: l.Port, Protocol: l.Protocol, DefaultActions: toXMLActions(l.DefaultActions)}
}

func (s *Server) describeListeners(form map[string][]string) (any, *apiError) {
	arns := list(form, "ListenerArns", "member")
	if len(arns) == 0 && first(form, "LoadBalancerArn") == "" {
		return nil, errf(400, "ValidationError", "a load balancer ARN or listener ARNs must be specified")
	}
	var out xmlListeners
	for _, arn := range arns {
		l, ok := s.listeners[arn]
		if !ok {
			return nil, errf(400, "ListenerNotFound", "One or more listeners not found")
		}
		out.Listeners = append(out.Listeners, toXMLListener(l))
	}
	if lb := first(form, "LoadBalancerArn"); lb != "" {
		for _, l := range s.listeners {
			if l.LoadBalancerARN == lb {
				out.Listeners = append(out.Listeners, toXMLListener(l))
			}
		}
	}
	return out, nil
}

type xmlRule struct {
	RuleArn   string      `xml:"RuleArn"`
	Priority  string      `xml:"Priority"`
	IsDefault bool        `xml:"IsDefault"`
	Actions   []xmlAction `xml:"Actions>member"`
	// Conditions are rendered minimally: one path-pattern when set.
	Conditions []xmlCondition `xml:"Conditions>member"`
}

type xmlCondition struct {
	Field  string   `xml:"Field"`
	Values []string `xml:"PathPatternConfig>Values>member"`
}

type xmlRules struct {
	XMLName xml.Name  `xml:"Rules"`
	Rules   []xmlRule `xml:"member"`
}

func toXMLRule(r *Rule) xmlRule {
	x := xmlRule{RuleArn: r.ARN, Priority: r.Priority, IsDefault: r.Priority == "default", Actions: toXMLActions(r.Actions)}
	if r.PathPattern != "" {
		x.Conditions = []xmlCondition{{Field: "path-pattern", Values: []string{r.PathPattern}}}
	}
	return x
}

func (s *Server) describeRules(form map[string][]string) (any, *apiError) {
	var out xmlRules
	for _, arn := range list(form, "RuleArns", "member") {
		r, ok := s.rules[arn]
		if !ok {
			return nil, errf(400, "RuleNotFound", "One or more rules not found")
		}
		out.Rules = append(out.Rules, toXMLRule(r))
	}
	if la := first(form, "ListenerArn"); la != "" {
		for _, r := range s.rules {
			if r.ListenerARN == la {
				out.Rules = append(out.Rules, toXMLRule(r))
			}
		}
	}
	return out, nil
}

type xmlTargetGroup struct {
	TargetGroupArn  string   `xml:"TargetGroupArn"`
	TargetGroupName string   `xml:"TargetGroupName"`
	Protocol        string   `xml:"Protocol,omitempty"`
	Port            int      `xml:"Port,omitempty"`
	TargetType      string   `xml:"TargetType"`
	LoadBalancerArn []string `xml:"LoadBalancerArns>member"`
}

type xmlTargetGroups struct {
	XMLName xml.Name         `xml:"TargetGroups"`
	Groups  []xmlTargetGroup `xml:"member"`
}

func (s *Server) describeTargetGroups(form map[string][]string) (any, *apiError) {
	arns := list(form, "TargetGroupArns", "member")
	names := list(form, "Names", "member")
	var out xmlTargetGroups
	add := func(g *TargetGroup) {
		out.Groups = append(out.Groups, xmlTargetGroup{TargetGroupArn: g.ARN, TargetGroupName: g.Name, Protocol: g.Protocol, Port: g.Port, TargetType: "instance"})
	}
	for _, arn := range arns {
		g, ok := s.groups[arn]
		if !ok {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
		add(g)
	}
	for _, n := range names {
		found := false
		for _, arn := range s.groupSeq {
			if g := s.groups[arn]; g.Name == n {
				add(g)
				found = true
			}
		}
		if !found {
			return nil, errf(400, "TargetGroupNotFound", "One or more target groups not found")
		}
	}
	if len(arns) == 0 && len(names) == 0 {
		for _, arn := range s.groupSeq {
			add(s.groups[arn])
		}
	}
	return out, nil
}

type xmlTargetHealthDescription struct {
	TargetID        string `xml:"Target>Id"`
	TargetPort      int    `xml:"Target>Port"`
	HealthCheckPort string `xml:"HealthCheckPort"`
	State           string `xml:"TargetHealth>State"`
	Reason          string `xml:"TargetHealth>Reason,omitempty"`
	Description     string `xml:"TargetHealth>Description,omitempty"`
}

type xmlTargetHealth struct {
	XMLName      xml.Name                     `xml:"TargetHealthDescriptions"`
	Descriptions []xmlTargetHealthDescription `xml:"member"`
}

func (s *Server) describeTargetHealth(form map[string][]string) (any, *apiError) {
	g, ok := s.groups[first(form, "TargetGroupArn")]
	if !ok {
		return nil, errf(400, "TargetGroupNotFound", "Target groups '%s' not found", first(form, "TargetGroupArn"))
	}
	var out xmlTargetHealth
	for _, t := range g.Targets {
		out.Descriptions = append(out.Descriptions, xmlTargetHealthDescription{
			TargetID: t.ID, TargetPort: t.Port, HealthCheckPort: strconv.Itoa(t.Port),
			State: t.State, Reason: t.Reason, Description: t.Description,
		})
	}
	return out, nil
}

// parseActions reads prefix.member.N.* action structures the way the SDK
// serialises types.Action, validating like ELBv2 does.
func (s *Server) parseActions(form map[string][]string, prefix string) ([]Action, *apiError) {
	var out []Action
	for _, p := range structs(form, prefix, "member") {
		a := Action{Type: first(form, p+".Type")}
		if o := first(form, p+".Order"); o != "" {
			a.Order, _ = strconv.Atoi(o)
		}
		switch a.Type {
		case "forward":
			short := first(form, p+".TargetGroupArn")
			for _, tp := range structs(form, p+".ForwardConfig.TargetGroups", "member") {
				w := 1
				if ws := first(form, tp+".Weight"); ws != "" {
					w, _ = strconv.Atoi(ws)
				}
				if w < 0 || w > 999 {
					return nil, errf(400, "ValidationError", "target group weight must be between 0 and 999")
				}
				a.Forward = append(a.Forward, WeightedGroup{ARN: first(form, tp+".TargetGroupArn"), Weight: w})
			}
			if short != "" {
				if len(a.Forward) > 1 || (len(a.Forward) == 1 && a.Forward[0].ARN != short) {
					return nil, errf(400, "ValidationError", "You can specify both a top-level target group ARN and a target group ARN within the forward action config only if they refer to the same single target group")
				}
				if len(a.Forward) == 0 {
					a.Forward = []WeightedGroup{{ARN: short, Weight: 1}}
					a.TargetGroupARNOnly = true
				}
			}
			if len(a.Forward) == 0 {
				return nil, errf(400, "ValidationError", "a forward action needs a target group")
			}
			for _, g := range a.Forward {
				if _, ok := s.groups[g.ARN]; !ok {
					return nil, errf(400, "TargetGroupNotFound", "Target groups '%s' not found", g.ARN)
				}
			}
			a.StickinessEnabled = first(form, p+".ForwardConfig.TargetGroupStickinessConfig.Enabled") == "true"
			a.StickinessSeconds, _ = strconv.Atoi(first(form, p+".ForwardConfig.TargetGroupStickinessConfig.DurationSeconds"))
		case "fixed-response":
			a.FixedStatusCode = first(form, p+".FixedResponseConfig.StatusCode")
			a.FixedContentType = first(form, p+".FixedResponseConfig.ContentType")
			a.FixedMessageBody = first(form, p+".FixedResponseConfig.MessageBody")
		default:
			return nil, errf(400, "ValidationError", "action type %q is not supported by this fake", a.Type)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errf(400, "ValidationError", "at least one action is required")
	}
	return out, nil
}

func (s *Server) modifyListener(form map[string][]string) (any, *apiError) {
	l, ok := s.listeners[first(form, "ListenerArn")]
	if !ok {
		return nil, errf(400, "ListenerNotFound", "One or more listeners not found")
	}
	if structs(form, "DefaultActions", "member") != nil {
		actions, err := s.parseActions(form, "DefaultActions")
		if err != nil {
			return nil, err
		}
		l.DefaultActions = actions
	}
	return xmlListeners{Listeners: []xmlListener{toXMLListener(l)}}, nil
}

func (s *Server) modifyRule(form map[string][]string) (any, *apiError) {
	r, ok := s.rules[first(form, "RuleArn")]
	if !ok {
		return nil, errf(400, "RuleNotFound", "One or more rules not found")
	}
	if structs(form, "Actions", "member") != nil {
		actions, err := s.parseActions(form, "Actions")
		if err != nil {
			return nil, err
		}
		r.Actions = slices.Clone(actions)
	}
	return xmlRules{Rules: []xmlRule{toXMLRule(r)}}, nil
}

func first(form map[string][]string, key string) string {
	if v := form[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// Tags, as ELBv2 answers them: target groups only here, at most 50 tags
// per resource, keys of 1–128 and values of at most 256 characters.

var tagRe = regexp.MustCompile(`^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$`)

func (s *Server) addTags(form map[string][]string) (any, *apiError) {
	arns := list(form, "ResourceArns", "member")
	if len(arns) == 0 {
		return nil, errf(400, "ValidationError", "1 validation error detected: Value null at 'resourceArns' failed to satisfy constraint: Member must not be null")
	}
	tags := map[string]string{}
	for _, p := range structs(form, "Tags", "member") {
		k, v := first(form, p+".Key"), first(form, p+".Value")
		if k == "" || len(k) > 128 || len(v) > 256 || !tagRe.MatchString(k) || !tagRe.MatchString(v) {
			return nil, errf(400, "ValidationError", "tag %q=%q does not satisfy the tag constraints", k, v)
		}
		tags[k] = v
	}
	if len(tags) == 0 {
		return nil, errf(400, "ValidationError", "1 validation error detected: Value null at 'tags' failed to satisfy constraint: Member must not be null")
	}
	for _, arn := range arns {
		g, ok := s.groups[arn]
		if !ok {
			return nil, errf(400, "TargetGroupNotFound", "Target groups '%s' not found", arn)
		}
		n := len(g.Tags)
		for k := range tags {
			if _, ok := g.Tags[k]; !ok {
				n++
			}
		}
		if n > 50 {
			return nil, errf(400, "TooManyTags", "You've reached the limit on the number of tags for this resource")
		}
	}
	for _, arn := range arns {
		g := s.groups[arn]
		if g.Tags == nil {
			g.Tags = map[string]string{}
		}
		maps.Copy(g.Tags, tags)
	}
	return []any{}, nil
}

type xmlTagDescription struct {
	ResourceArn string   `xml:"ResourceArn"`
	Tags        []xmlTag `xml:"Tags>member"`
}

type xmlTagDescriptions struct {
	XMLName      xml.Name            `xml:"TagDescriptions"`
	Descriptions []xmlTagDescription `xml:"member"`
}

func (s *Server) describeTags(form map[string][]string) (any, *apiError) {
	arns := list(form, "ResourceArns", "member")
	if len(arns) == 0 || len(arns) > 20 {
		return nil, errf(400, "ValidationError", "resourceArns: between 1 and 20 ARNs")
	}
	var out xmlTagDescriptions
	for _, arn := range arns {
		g, ok := s.groups[arn]
		if !ok {
			return nil, errf(400, "TargetGroupNotFound", "Target groups '%s' not found", arn)
		}
		d := xmlTagDescription{ResourceArn: arn}
		for _, k := range slices.Sorted(maps.Keys(g.Tags)) {
			d.Tags = append(d.Tags, xmlTag{Key: k, Value: g.Tags[k]})
		}
		out.Descriptions = append(out.Descriptions, d)
	}
	return out, nil
}
