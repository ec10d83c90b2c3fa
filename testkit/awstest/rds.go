package awstest

import (
	"encoding/xml"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

const rdsTime = "2006-01-02T15:04:05.000Z"

type xmlEndpoint struct {
	Address      string `xml:"Address"`
	Port         int    `xml:"Port"`
	HostedZoneID string `xml:"HostedZoneId"`
}

type xmlSG struct {
	ID     string `xml:"VpcSecurityGroupId"`
	Status string `xml:"Status"`
}

type xmlPG struct {
	Name   string `xml:"DBParameterGroupName"`
	Status string `xml:"ParameterApplyStatus"`
}

type xmlTag struct {
	Key   string `xml:"Key"`
	Value string `xml:"Value"`
}

type xmlDBInstance struct {
	XMLName              xml.Name     `xml:"DBInstance"`
	ID                   string       `xml:"DBInstanceIdentifier"`
	Class                string       `xml:"DBInstanceClass,omitempty"`
	Engine               string       `xml:"Engine,omitempty"`
	EngineVersion        string       `xml:"EngineVersion,omitempty"`
	Status               string       `xml:"DBInstanceStatus"`
	Endpoint             *xmlEndpoint `xml:"Endpoint,omitempty"`
	InstanceCreateTime   string       `xml:"InstanceCreateTime,omitempty"`
	BackupRetention      int          `xml:"BackupRetentionPeriod"`
	LatestRestorableTime string       `xml:"LatestRestorableTime,omitempty"`
	MultiAZ              bool         `xml:"MultiAZ"`
	PubliclyAccessible   bool         `xml:"PubliclyAccessible"`
	SubnetGroup          string       `xml:"DBSubnetGroup>DBSubnetGroupName,omitempty"`
	SecurityGroups       []xmlSG      `xml:"VpcSecurityGroups>VpcSecurityGroupMembership"`
	ParameterGroups      []xmlPG      `xml:"DBParameterGroups>DBParameterGroup"`
	Tags                 []xmlTag     `xml:"TagList>Tag"`
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(rdsTime)
}

func toXMLInstance(in *DBInstance) xmlDBInstance {
	x := xmlDBInstance{
		ID: in.ID, Class: in.Class, Engine: in.Engine, EngineVersion: in.EngineVersion, Status: in.Status,
		InstanceCreateTime: fmtTime(in.CreatedAt), BackupRetention: in.BackupRetentionDays,
		LatestRestorableTime: fmtTime(in.LatestRestorableTime), MultiAZ: in.MultiAZ,
		PubliclyAccessible: in.PubliclyAccessible, SubnetGroup: in.SubnetGroup,
	}
	if in.Address != "" {
		x.Endpoint = &xmlEndpoint{Address: in.Address, Port: in.Port, HostedZoneID: "Z2R2ITUGPM61AM"}
	}
	for _, sg := range in.SecurityGroups {
		x.SecurityGroups = append(x.SecurityGroups, xmlSG{ID: sg, Status: "active"})
	}
	if in.ParameterGroup != "" {
		x.ParameterGroups = []xmlPG{{Name: in.ParameterGroup, Status: "in-sync"}}
	}
	for k, v := range in.Tags {
		x.Tags = append(x.Tags, xmlTag{Key: k, Value: v})
	}
	return x
}

type xmlDBSnapshot struct {
	XMLName     xml.Name `xml:"DBSnapshot"`
	ID          string   `xml:"DBSnapshotIdentifier"`
	Instance    string   `xml:"DBInstanceIdentifier"`
	Type        string   `xml:"SnapshotType"`
	Status      string   `xml:"Status"`
	Created     string   `xml:"SnapshotCreateTime,omitempty"`
	Engine      string   `xml:"Engine,omitempty"`
	Port        int      `xml:"Port,omitempty"`
	PercentDone int      `xml:"PercentProgress"`
}

type xmlDBSnapshots struct {
	XMLName   xml.Name        `xml:"DBSnapshots"`
	Snapshots []xmlDBSnapshot `xml:"DBSnapshot"`
}

type xmlDBInstances struct {
	XMLName   xml.Name        `xml:"DBInstances"`
	Instances []xmlDBInstance `xml:"DBInstance"`
}

type xmlMarker struct {
	XMLName xml.Name `xml:"Marker"`
	Value   string   `xml:",chardata"`
}

func pageBounds(form map[string][]string, n int) (start, end int, next string, aerr *apiError) {
	max := 100
	if m := first(form, "MaxRecords"); m != "" {
		v, err := strconv.Atoi(m)
		if err != nil || v < 20 || v > 100 {
			return 0, 0, "", errf(400, "InvalidParameterValue", "Invalid value %s for MaxRecords. Must be between 20 and 100", m)
		}
		max = v
	}
	if mk := first(form, "Marker"); mk != "" {
		v, err := strconv.Atoi(strings.TrimPrefix(mk, "fake-marker-"))
		if err != nil || v < 0 || v > n {
			return 0, 0, "", errf(400, "InvalidParameterValue", "invalid marker")
		}
		start = v
	}
	end = min(start+max, n)
	if end < n {
		next = "fake-marker-" + strconv.Itoa(end)
	}
	return start, end, next, nil
}

func (s *Server) describeDBSnapshots(form map[string][]string) (any, *apiError) {
	inst, id, typ := first(form, "DBInstanceIdentifier"), first(form, "DBSnapshotIdentifier"), first(form, "SnapshotType")
	var match []*DBSnapshot
	for _, sn := range s.snapshots {
		if (inst == "" || sn.Instance == inst) && (id == "" || sn.ID == id) && (typ == "" || sn.Type == typ) {
			match = append(match, sn)
		}
	}
	if id != "" && len(match) == 0 {
		return nil, errf(404, "DBSnapshotNotFound", "DBSnapshot %s not found.", id)
	}
	start, end, next, aerr := pageBounds(form, len(match))
	if aerr != nil {
		return nil, aerr
	}
	var out xmlDBSnapshots
	for _, sn := range match[start:end] {
		pct := 100
		if sn.Status != "available" {
			pct = 40
		}
		out.Snapshots = append(out.Snapshots, xmlDBSnapshot{ID: sn.ID, Instance: sn.Instance, Type: sn.Type, Status: sn.Status, Created: fmtTime(sn.Created), Engine: sn.Engine, Port: sn.Port, PercentDone: pct})
	}
	res := []any{out}
	if next != "" {
		res = append(res, xmlMarker{Value: next})
	}
	return res, nil
}

func (s *Server) describeDBInstances(form map[string][]string) (any, *apiError) {
	var out xmlDBInstances
	if id := first(form, "DBInstanceIdentifier"); id != "" {
		// A rename to id moves on when id is asked for, too.
		for _, other := range slices.Clone(s.instOrder) {
			if in := s.instances[other]; in != nil && in.RenamingTo == id {
				s.advance(in)
			}
		}
		in, ok := s.instances[id]
		if ok {
			s.advance(in)
		}
		if !ok || in.ID != id { // unknown, or it just got its new name
			return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", id)
		}
		out.Instances = append(out.Instances, toXMLInstance(in))
		return out, nil
	}
	for _, id := range slices.Clone(s.instOrder) {
		if in := s.instances[id]; in != nil {
			s.advance(in)
		}
	}
	for _, id := range s.instOrder {
		out.Instances = append(out.Instances, toXMLInstance(s.instances[id]))
	}
	return out, nil
}

// advance moves a restoring instance one describe closer to "available",
// and a renaming one closer to its new identifier.
func (s *Server) advance(in *DBInstance) {
	if in.Status == "renaming" {
		if in.describesUntilRenamed > 0 {
			in.describesUntilRenamed--
			return
		}
		s.rename(in)
		return
	}
	if in.Status != "creating" {
		return
	}
	if in.describesUntilCreated > 0 {
		in.describesUntilCreated--
		return
	}
	in.Status = "available"
	suffix := in.addrSuffix
	if suffix == "" {
		suffix = "c0fake0abcde.us-east-1.rds.amazonaws.com"
	}
	in.Address = in.ID + "." + suffix
	now := s.now()
	in.LatestRestorableTime = now
}

var instanceIDRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9-]{0,62}$`)

func validInstanceID(id string) *apiError {
	if !instanceIDRe.MatchString(id) || strings.Contains(id, "--") || strings.HasSuffix(id, "-") {
		return errf(400, "InvalidParameterValue", "The parameter DBInstanceIdentifier is not a valid identifier. Identifiers must begin with a letter; must contain only ASCII letters, digits, and hyphens; and must not end with a hyphen or contain two consecutive hyphens.")
	}
	return nil
}

// newFromRequest builds the restored instance from the request's options,
// falling back to RDS's defaults (not the source's settings), as RDS does.
func (s *Server) newFromRequest(form map[string][]string, id string, src *DBInstance) *DBInstance {
	in := &DBInstance{
		ID: id, Status: "creating", Engine: src.Engine, EngineVersion: src.EngineVersion,
		Class: first(form, "DBInstanceClass"), SubnetGroup: first(form, "DBSubnetGroupName"),
		SecurityGroups: list(form, "VpcSecurityGroupIds", "VpcSecurityGroupId"),
		ParameterGroup: first(form, "DBParameterGroupName"),
		MultiAZ:        first(form, "MultiAZ") == "true", PubliclyAccessible: first(form, "PubliclyAccessible") == "true",
		Port: src.Port, CreatedAt: s.now(), BackupRetentionDays: 1,
		describesUntilCreated: s.restoreDescribes, Tags: map[string]string{},
	}
	if in.Class == "" {
		in.Class = src.Class
	}
	if in.SubnetGroup == "" {
		in.SubnetGroup = "default"
	}
	if len(in.SecurityGroups) == 0 {
		in.SecurityGroups = []string{"sg-default"}
	}
	if in.ParameterGroup == "" {
		in.ParameterGroup = "default." + src.Engine
	}
	for _, p := range structs(form, "Tags", "Tag") {
		in.Tags[first(form, p+".Key")] = first(form, p+".Value")
	}
	if in.Port == 0 {
		in.Port = 5432
	}
	// Instances of one account and region share the DNS suffix.
	if _, suffix, ok := strings.Cut(src.Address, "."); ok {
		in.addrSuffix = suffix
	}
	return in
}

func (s *Server) restoreFromSnapshot(form map[string][]string) (any, *apiError) {
	id, snapID := first(form, "DBInstanceIdentifier"), first(form, "DBSnapshotIdentifier")
	if err := validInstanceID(id); err != nil {
		return nil, err
	}
	var sn *DBSnapshot
	for _, x := range s.snapshots {
		if x.ID == snapID {
			sn = x
		}
	}
	if sn == nil {
		return nil, errf(404, "DBSnapshotNotFound", "DBSnapshot %s not found.", snapID)
	}
	if sn.Status != "available" {
		return nil, errf(400, "InvalidDBSnapshotState", "Snapshot %s is not in available state", snapID)
	}
	if _, exists := s.instances[id]; exists {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	src := &DBInstance{Engine: sn.Engine, Port: sn.Port}
	if orig, ok := s.instances[sn.Instance]; ok {
		src = orig
	}
	in := s.newFromRequest(form, id, src)
	in.RestoredFromSnapshot = snapID
	s.instances[id] = in
	s.instOrder = append(s.instOrder, id)
	return toXMLInstance(in), nil
}

func (s *Server) restoreToPointInTime(form map[string][]string) (any, *apiError) {
	srcID, id := first(form, "SourceDBInstanceIdentifier"), first(form, "TargetDBInstanceIdentifier")
	src, ok := s.instances[srcID]
	if !ok {
		return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", srcID)
	}
	if err := validInstanceID(id); err != nil {
		return nil, err
	}
	if _, exists := s.instances[id]; exists {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	if src.BackupRetentionDays == 0 {
		return nil, errf(400, "InvalidDBInstanceState", "Automated backups are not enabled for this database instance")
	}
	var at time.Time
	if first(form, "UseLatestRestorableTime") == "true" {
		if first(form, "RestoreTime") != "" {
			return nil, errf(400, "InvalidParameterCombination", "Cannot specify both RestoreTime and UseLatestRestorableTime")
		}
		at = src.LatestRestorableTime
	} else {
		t, err := time.Parse(time.RFC3339Nano, first(form, "RestoreTime"))
		if err != nil {
			return nil, errf(400, "InvalidParameterValue", "Invalid RestoreTime %q", first(form, "RestoreTime"))
		}
		earliest := src.LatestRestorableTime.Add(-time.Duration(src.BackupRetentionDays) * 24 * time.Hour)
		if src.CreatedAt.After(earliest) {
			earliest = src.CreatedAt
		}
		if t.After(src.LatestRestorableTime) || t.Before(earliest) {
			return nil, errf(400, "InvalidRestoreFault", "Restore time %s is outside the restorable window %s - %s", fmtTime(t), fmtTime(earliest), fmtTime(src.LatestRestorableTime))
		}
		at = t
	}
	in := s.newFromRequest(form, id, src)
	in.RestoredToTime = at
	s.instances[id] = in
	s.instOrder = append(s.instOrder, id)
	return toXMLInstance(in), nil
}

// rename gives in its new identifier: the old one is free from now on, and
// the endpoint's DNS name follows the identifier, as on RDS.
func (s *Server) rename(in *DBInstance) {
	old, to := in.ID, in.RenamingTo
	delete(s.instances, old)
	s.instances[to] = in
	for i, id := range s.instOrder {
		if id == old {
			s.instOrder[i] = to
		}
	}
	in.Renames = append(in.Renames, old)
	in.ID, in.RenamingTo, in.Status = to, "", "available"
	if rest, ok := strings.CutPrefix(in.Address, old+"."); ok {
		in.Address = to + "." + rest
	}
}

// modifyDBInstance models the one modification rollbot makes: a new
// identifier (NewDBInstanceIdentifier). With ApplyImmediately the instance
// is "renaming" for a few describes, then known only by its new name;
// without it the rename waits for the maintenance window (never, here).
func (s *Server) modifyDBInstance(form map[string][]string) (any, *apiError) {
	id, to := first(form, "DBInstanceIdentifier"), first(form, "NewDBInstanceIdentifier")
	in, ok := s.instances[id]
	if !ok || in.ID != id {
		return nil, errf(404, "DBInstanceNotFound", "DBInstance %s not found.", id)
	}
	if to == "" {
		return toXMLInstance(in), nil // nothing else is modelled
	}
	if err := validInstanceID(to); err != nil {
		return nil, err
	}
	if in.Status != "available" {
		return nil, errf(400, "InvalidDBInstanceState", "Database instance is not in available state (%s).", in.Status)
	}
	if _, exists := s.instances[to]; exists {
		return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
	}
	for _, other := range s.instances {
		if other.RenamingTo == to {
			return nil, errf(400, "DBInstanceAlreadyExists", "DB instance already exists")
		}
	}
	if first(form, "ApplyImmediately") != "true" {
		in.PendingRename = to
		return toXMLInstance(in), nil
	}
	in.Status, in.RenamingTo, in.describesUntilRenamed = "renaming", to, s.renameDescribes
	return toXMLInstance(in), nil
}
