package kairostest

import (
	"encoding/json"
	"fmt"
	"time"
)

// Faults are runtime faults layered over the Config, for fault-injection tests. Each
// duration counts from the moment they are set (SetFaults or POST /_emulator/faults).
// Setting Faults replaces the previous ones; the zero Faults clears them.
//
// In JSON (the admin API) durations are Go duration strings:
//
//	{"usage_limit_for":"20s"}  {"outage_for":"10s"}  {"error_rate":0.5,"for":"15s"}  {"app_key":"wrong"}
type Faults struct {
	// UsageLimitFor answers 403 (a usage limit) to every authenticated request for this
	// long.
	UsageLimitFor time.Duration
	// OutageFor answers 503 to every authenticated request for this long.
	OutageFor time.Duration
	// ErrorRate, in [0, 1], replaces Config.ErrorRate for For (or until the faults are
	// replaced when For is 0).
	ErrorRate float64
	// For is how long ErrorRate applies; 0 means until the faults are replaced.
	For time.Duration
	// AppKey, when not nil, replaces the accepted app key (e.g. to make the client's key
	// wrong); empty accepts any key.
	AppKey *string
}

// faultState is Faults with absolute deadlines.
type faultState struct {
	usageLimitUntil time.Time
	outageUntil     time.Time
	errorRate       float64
	errorRateUntil  time.Time
	appKey          *string
}

// forever stands in for "no end".
var forever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

func (f Faults) validate() error {
	switch {
	case f.UsageLimitFor < 0, f.OutageFor < 0, f.For < 0:
		return fmt.Errorf("kairostest: fault durations must not be negative")
	case !(f.ErrorRate >= 0 && f.ErrorRate <= 1):
		return fmt.Errorf("kairostest: fault error_rate must be in [0, 1], got %v", f.ErrorRate)
	}
	return nil
}

func (f Faults) state(now time.Time) faultState {
	s := faultState{errorRate: f.ErrorRate}
	if f.UsageLimitFor > 0 {
		s.usageLimitUntil = now.Add(f.UsageLimitFor)
	}
	if f.OutageFor > 0 {
		s.outageUntil = now.Add(f.OutageFor)
	}
	if f.ErrorRate > 0 {
		s.errorRateUntil = forever
		if f.For > 0 {
			s.errorRateUntil = now.Add(f.For)
		}
	}
	if f.AppKey != nil {
		k := *f.AppKey
		s.appKey = &k
	}
	return s
}

// faultsJSON is the admin API's spelling of Faults.
type faultsJSON struct {
	UsageLimitFor string  `json:"usage_limit_for,omitempty"`
	OutageFor     string  `json:"outage_for,omitempty"`
	ErrorRate     float64 `json:"error_rate,omitempty"`
	For           string  `json:"for,omitempty"`
	AppKey        *string `json:"app_key,omitempty"`
}

// MarshalJSON encodes f as the admin API expects it, durations as strings. The app key is
// included: Faults are test inputs, never real credentials.
func (f Faults) MarshalJSON() ([]byte, error) {
	j := faultsJSON{ErrorRate: f.ErrorRate, AppKey: f.AppKey}
	if f.UsageLimitFor > 0 {
		j.UsageLimitFor = f.UsageLimitFor.String()
	}
	if f.OutageFor > 0 {
		j.OutageFor = f.OutageFor.String()
	}
	if f.For > 0 {
		j.For = f.For.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON decodes the admin API's JSON form (durations as Go duration strings).
func (f *Faults) UnmarshalJSON(b []byte) error {
	var j faultsJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	out := Faults{ErrorRate: j.ErrorRate, AppKey: j.AppKey}
	for _, d := range []struct {
		name string
		s    string
		dst  *time.Duration
	}{
		{"usage_limit_for", j.UsageLimitFor, &out.UsageLimitFor},
		{"outage_for", j.OutageFor, &out.OutageFor},
		{"for", j.For, &out.For},
	} {
		if d.s == "" {
			continue
		}
		v, err := time.ParseDuration(d.s)
		if err != nil {
			return fmt.Errorf("kairostest: faults %s: %w", d.name, err)
		}
		*d.dst = v
	}
	*f = out
	return nil
}
