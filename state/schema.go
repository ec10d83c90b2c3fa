package state

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// SchemaRecord is what rollbot read from a service's migration table at
// one moment: the migration tools that store no applied time
// (golang-migrate, Rails) are compared against the newest record from
// before a bad deploy started.
type SchemaRecord struct {
	At       time.Time `json:"at"`
	Artifact string    `json:"artifact"` // the revision the service ran then
	Tool     string    `json:"tool"`
	Versions []string  `json:"versions"`
}

// maxSchemaRecords per service: at one record every 5 minutes, 3.5 days.
const maxSchemaRecords = 1000

// RecordSchema stores rec; the newest maxSchemaRecords are kept.
func (s *Store) RecordSchema(ctx context.Context, service string, rec SchemaRecord) error {
	if rec.At.IsZero() {
		rec.At = s.now()
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record schema %s: %w", service, err)
	}
	k := s.key("schema", service)
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, k, redis.Z{Score: float64(rec.At.UnixMilli()), Member: b})
		p.ZRemRangeByRank(ctx, k, 0, -maxSchemaRecords-1)
		return nil
	})
	if err != nil {
		return fmt.Errorf("record schema %s: %w", service, err)
	}
	return nil
}

// SchemaBefore returns the newest record taken strictly before t.
func (s *Store) SchemaBefore(ctx context.Context, service string, t time.Time) (SchemaRecord, bool, error) {
	res, err := s.rdb.ZRevRangeByScore(ctx, s.key("schema", service), &redis.ZRangeBy{
		Max: "(" + strconv.FormatInt(t.UnixMilli(), 10), Min: "-inf", Count: 1}).Result()
	if err != nil {
		return SchemaRecord{}, false, fmt.Errorf("read schema records %s: %w", service, err)
	}
	if len(res) == 0 {
		return SchemaRecord{}, false, nil
	}
	var rec SchemaRecord
	if err := json.Unmarshal([]byte(res[0]), &rec); err != nil {
		return SchemaRecord{}, false, fmt.Errorf("read schema records %s: %w", service, err)
	}
	return rec, true, nil
}
