package worker

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the worker's Prometheus series. Register them once per registry.
type Metrics struct {
	APICalls      *prometheus.CounterVec   // livenessq_api_calls_total{code}
	APILatency    prometheus.Histogram     // livenessq_api_latency_seconds
	BudgetWait    prometheus.Histogram     // livenessq_budget_wait_seconds
	Fetch         prometheus.Histogram     // livenessq_fetch_seconds
	ResultWrite   prometheus.Histogram     // livenessq_result_write_seconds
	Results       *prometheus.CounterVec   // livenessq_results_total{status}
	Retries       *prometheus.CounterVec   // livenessq_retries_total{reason}
	RetryDelay    prometheus.Histogram     // livenessq_retry_delay_seconds
	Archived      prometheus.Counter       // livenessq_archived_total
	Redeliveries  prometheus.Counter       // livenessq_redeliveries_total
	SavedCalls    prometheus.Counter       // livenessq_saved_calls_total
	TaskDuration  *prometheus.HistogramVec // livenessq_task_duration_seconds{status}
	collectorList []prometheus.Collector
}

// NewMetrics builds the series and registers them with reg (when not nil).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		APICalls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livenessq_api_calls_total", Help: "Kairos API calls made, by HTTP status code (\"error\" for transport errors).",
		}, []string{"code"}),
		APILatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livenessq_api_latency_seconds", Help: "Kairos API call latency.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		BudgetWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livenessq_budget_wait_seconds", Help: "Time spent waiting for the global API budget before a call.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 18),
		}),
		Fetch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livenessq_fetch_seconds", Help: "Time until storage answered a selfie's GET (its headers; the body streams on).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		ResultWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livenessq_result_write_seconds", Help: "Time to write a result: to storage, then to Redis.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		Results: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livenessq_results_total", Help: "Results written, by status.",
		}, []string{"status"}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "livenessq_retries_total", Help: "Attempts that ended in a retry, by reason.",
		}, []string{"reason"}),
		RetryDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "livenessq_retry_delay_seconds", Help: "Backoff delays chosen for retries.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 17),
		}),
		Archived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livenessq_archived_total", Help: "Tasks archived after their attempts ran out (written as failed).",
		}),
		Redeliveries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livenessq_redeliveries_total", Help: "Results written again for a key already counted in its batch.",
		}),
		SavedCalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "livenessq_saved_calls_total", Help: "API calls avoided by reusing a verdict from an earlier attempt of the same task.",
		}),
		TaskDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "livenessq_task_duration_seconds", Help: "Task processing time, by result status.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}, []string{"status"}),
	}
	m.collectorList = []prometheus.Collector{m.APICalls, m.APILatency, m.BudgetWait, m.Fetch, m.ResultWrite, m.Results, m.Retries,
		m.RetryDelay, m.Archived, m.Redeliveries, m.SavedCalls, m.TaskDuration}
	if reg != nil {
		reg.MustRegister(m.collectorList...)
	}
	return m
}
