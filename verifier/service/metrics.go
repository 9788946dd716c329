package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus series.
type metrics struct {
	reg        *prometheus.Registry
	appraisals *prometheus.CounterVec
	latency    prometheus.Histogram
	references *prometheus.GaugeVec
}

func newMetrics(collateralFetched func() (time.Time, bool), now func() time.Time, fetchErrors, noncesRemembered func() float64) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		appraisals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "tdforge_appraisals_total",
			Help: "Appraisals by outcome: the ear.status of the signed result, or refused (a 4xx without a result) or error (no verdict reached).",
		}, []string{"status"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "tdforge_appraisal_duration_seconds",
			Help:    "Time to appraise evidence and sign the result.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		references: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "tdforge_reference_documents",
			Help: "Reference documents loaded from --reference-dir, by state (active, revoked, invalid).",
		}, []string{"state"}),
	}
	m.reg.MustRegister(m.appraisals, m.latency, m.references)
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "tdforge_collateral_fetch_errors_total",
		Help: "Failed Intel PCS collateral fetches (on demand or by the background refresh).",
	}, fetchErrors))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tdforge_collateral_age_seconds",
		Help: "Age of the oldest collateral in use: the offline bundle (--collateral), or the oldest PCS response in the cache; -1 while the cache is empty.",
	}, func() float64 {
		t, ok := collateralFetched()
		if !ok {
			return -1
		}
		return now().Sub(t).Seconds()
	}))
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "tdforge_nonces_remembered",
		Help: "Used nonces the service remembers, to refuse their replay until they expire.",
	}, noncesRemembered))
	for _, s := range []string{"affirming", "warning", "contraindicated", "refused", "error"} {
		m.appraisals.WithLabelValues(s)
	}
	return m
}

func (m *metrics) setReferences(rs *refSet) {
	active, revoked := rs.counts()
	m.references.WithLabelValues("active").Set(float64(active))
	m.references.WithLabelValues("revoked").Set(float64(revoked))
	m.references.WithLabelValues("invalid").Set(float64(len(rs.problems)))
}
