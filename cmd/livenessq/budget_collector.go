package main

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/livenessq/livenessq/worker"
)

// budgetCollector exports the global API budget as Prometheus series: its shared state
// as Redis holds it (read at each scrape) and this process's budget counters.
type budgetCollector struct {
	budget  *worker.Budget
	timeout time.Duration
}

var _ prometheus.Collector = (*budgetCollector)(nil)

func newBudgetCollector(b *worker.Budget) *budgetCollector {
	return &budgetCollector{budget: b, timeout: 2 * time.Second}
}

func budgetDesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("livenessq_budget_"+name, help, labels, nil)
}

var (
	budgetUpDesc          = budgetDesc("up", "1 when the budget state could be read from Redis at this scrape, else 0.")
	budgetInFlightDesc    = budgetDesc("in_flight_leases", "API calls in flight across all workers (leases held).")
	budgetMaxInFlightDesc = budgetDesc("max_in_flight", "Configured cap on API calls in flight; 0 = none.")
	budgetRateDesc        = budgetDesc("rate", "Configured API usage limit, calls/s; 0 = none.")
	budgetPaceRateDesc    = budgetDesc("pace_rate", "Rate the budget admits calls at now (after headroom and quota pacing), calls/s; 0 = unlimited or quota used up.")
	budgetCoolingDesc     = budgetDesc("cooling", "1 while a usage-limit (403) cooldown is open, else 0.")
	budgetCooldownDesc    = budgetDesc("cooldown_until_seconds", "Unix time the current cooldown ends; 0 when none.")
	budgetPausedDesc      = budgetDesc("paused", "1 when persistent 403s paused the queue, else 0.")
	budgetQuotaDesc       = budgetDesc("quota", "Configured calls per quota period; 0 = no quota.")
	budgetQuotaLeftDesc   = budgetDesc("quota_left", "Calls left in the current quota period.")
	budgetQuotaUsedDesc   = budgetDesc("quota_used", "Calls used in the current quota period.")
	budgetAdmittedDesc    = budgetDesc("admitted_total", "Leases this process was granted.")
	budgetDeniedDesc      = budgetDesc("denied_total", "Admission attempts of this process refused, by reason.", "reason")
	budgetLimitedDesc     = budgetDesc("usage_limited_total", "Calls of this process answered 403 (usage limit).")
	budgetCooldownsDesc   = budgetDesc("cooldowns_opened_total", "Cooldowns this process opened or doubled.")
	budgetUnavailDesc     = budgetDesc("unavailable_total", "Budget calls of this process that failed because Redis was unreachable.")
	budgetLostDesc        = budgetDesc("leases_lost_total", "Leases of this process found expired by the heartbeat.")
	budgetMovedDesc       = budgetDesc("turns_moved_total", "Turns of this process re-recorded at the moment their call left (it left late).")
)

// Describe sends every series' descriptor.
func (c *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{budgetUpDesc, budgetInFlightDesc, budgetMaxInFlightDesc, budgetRateDesc,
		budgetPaceRateDesc, budgetCoolingDesc, budgetCooldownDesc, budgetPausedDesc, budgetQuotaDesc,
		budgetQuotaLeftDesc, budgetQuotaUsedDesc, budgetAdmittedDesc, budgetDeniedDesc, budgetLimitedDesc,
		budgetCooldownsDesc, budgetUnavailDesc, budgetLostDesc, budgetMovedDesc} {
		ch <- d
	}
}

// Collect reads the budget state from Redis (bounded by the collector's timeout) and
// this process's counters.
func (c *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	st := c.budget.Stats()
	counter(budgetAdmittedDesc, st.Admitted.Load())
	counter(budgetDeniedDesc, st.DeniedRate.Load(), "rate")
	counter(budgetDeniedDesc, st.DeniedConcurrency.Load(), "concurrency")
	counter(budgetDeniedDesc, st.DeniedCooldown.Load(), "cooldown")
	counter(budgetDeniedDesc, st.DeniedQuota.Load(), "quota")
	counter(budgetDeniedDesc, st.Late.Load(), "late")
	counter(budgetLimitedDesc, st.UsageLimited.Load())
	counter(budgetCooldownsDesc, st.CooldownsOpened.Load())
	counter(budgetUnavailDesc, st.Unavailable.Load())
	counter(budgetLostDesc, st.LeasesLost.Load())
	counter(budgetMovedDesc, st.Moved.Load())

	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	s, err := c.budget.State(ctx)
	if err != nil {
		gauge(budgetUpDesc, 0)
		return
	}
	gauge(budgetUpDesc, 1)
	gauge(budgetInFlightDesc, float64(s.InFlight))
	gauge(budgetMaxInFlightDesc, float64(s.MaxInFlight))
	gauge(budgetRateDesc, s.Rate)
	gauge(budgetPaceRateDesc, s.PaceRate)
	gauge(budgetCoolingDesc, boolGauge(s.Cooling))
	until := 0.0
	if !s.CooldownUntil.IsZero() {
		until = float64(s.CooldownUntil.UnixMilli()) / 1000
	}
	gauge(budgetCooldownDesc, until)
	gauge(budgetPausedDesc, boolGauge(s.Paused))
	gauge(budgetQuotaDesc, float64(s.Quota))
	gauge(budgetQuotaLeftDesc, float64(s.QuotaLeft))
	gauge(budgetQuotaUsedDesc, float64(s.QuotaUsed))
}

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
