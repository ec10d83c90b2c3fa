package awstest

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

func post(t *testing.T, s *Server, form url.Values, signed bool) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if signed {
		req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260626/us-east-1/elasticloadbalancing/aws4_request, SignedHeaders=host, Signature=0")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestProtocol(t *testing.T) {
	s := New()
	defer s.Close()
	s.AddTargetGroup(TargetGroup{ARN: "arn:tg/a", Name: "a", Targets: []Target{{ID: "i-1", Port: 80, State: "healthy"}}})
	s.AddListener(Listener{ARN: "arn:l", DefaultActions: []Action{{Type: "forward", Forward: []WeightedGroup{{ARN: "arn:tg/a", Weight: 1}}}}})

	tests := []struct {
		name   string
		form   url.Values
		signed bool
		status int
		want   []string
	}{
		{"unsigned", url.Values{"Action": {"DescribeListeners"}, "Version": {elbVersion}}, false, 403, []string{"<Code>MissingAuthenticationToken</Code>"}},
		{"unknown action", url.Values{"Action": {"DeleteLoadBalancer"}, "Version": {elbVersion}}, true, 400, []string{"<Code>InvalidAction</Code>"}},
		{"listener", url.Values{"Action": {"DescribeListeners"}, "Version": {elbVersion}, "ListenerArns.member.1": {"arn:l"}}, true, 200, []string{
			`<DescribeListenersResponse xmlns="http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/"><DescribeListenersResult><Listeners><member><ListenerArn>arn:l</ListenerArn>`,
			`<TargetGroupArn>arn:tg/a</TargetGroupArn><ForwardConfig><TargetGroups><member><TargetGroupArn>arn:tg/a</TargetGroupArn><Weight>1</Weight></member>`,
			"<ResponseMetadata><RequestId>"}},
		{"missing listener", url.Values{"Action": {"DescribeListeners"}, "Version": {elbVersion}, "ListenerArns.member.1": {"arn:nope"}}, true, 400, []string{"<Code>ListenerNotFound</Code>"}},
		{"weight out of range", url.Values{"Action": {"ModifyListener"}, "Version": {elbVersion}, "ListenerArn": {"arn:l"},
			"DefaultActions.member.1.Type": {"forward"}, "DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.TargetGroupArn": {"arn:tg/a"},
			"DefaultActions.member.1.ForwardConfig.TargetGroups.member.1.Weight": {"1000"}}, true, 400, []string{"<Code>ValidationError</Code>"}},
		{"unknown group", url.Values{"Action": {"ModifyListener"}, "Version": {elbVersion}, "ListenerArn": {"arn:l"},
			"DefaultActions.member.1.Type": {"forward"}, "DefaultActions.member.1.TargetGroupArn": {"arn:tg/zzz"}}, true, 400, []string{"<Code>TargetGroupNotFound</Code>"}},
		{"rds not found", url.Values{"Action": {"DescribeDBInstances"}, "Version": {rdsVersion}, "DBInstanceIdentifier": {"db"}}, true, 404, []string{"<Code>DBInstanceNotFound</Code>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(t, s, tt.form, tt.signed)
			if status != tt.status {
				t.Errorf("status = %d, want %d: %s", status, tt.status, body)
			}
			for _, w := range tt.want {
				if !strings.Contains(body, w) {
					t.Errorf("body lacks %q:\n%s", w, body)
				}
			}
		})
	}
	if l, _ := s.Listener("arn:l"); l.DefaultActions[0].Forward[0].Weight != 1 {
		t.Error("a rejected ModifyListener changed the listener")
	}
	if got := len(s.Requests("ModifyListener")); got != 2 {
		t.Errorf("recorded ModifyListener = %d, want 2", got)
	}
	if r := s.Requests("DescribeListeners"); r[len(r)-1].AccessKeyID != "AKIDEXAMPLE" || r[len(r)-1].Service != "elasticloadbalancing" {
		t.Errorf("recorded = %+v", r[len(r)-1])
	}

	s.Inject(Fault{Action: "DescribeTargetHealth", Code: "Throttling", Times: 1})
	form := url.Values{"Action": {"DescribeTargetHealth"}, "Version": {elbVersion}, "TargetGroupArn": {"arn:tg/a"}}
	if status, body := post(t, s, form, true); status != 400 || !strings.Contains(body, "<Code>Throttling</Code><Message>Rate exceeded</Message>") {
		t.Errorf("injected throttling = %d %s", status, body)
	}
	if status, body := post(t, s, form, true); status != 200 || !strings.Contains(body, "<State>healthy</State>") {
		t.Errorf("after the fault = %d %s", status, body)
	}
}
