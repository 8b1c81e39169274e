{{/* The alerting rules as a Prometheus rule file's `groups` (templates/prometheusrule.yaml filters and labels them).
     Campaign alerts aggregate by (namespace, campaign) so that a leader hand-over, which moves the series to
     another replica's target labels, keeps the same alert; Failed and Degraded look 2 minutes back so that the
     moment between the old leader's last scrape and the new one's first neither resolves nor restarts them. tests/test_alerts.py checks the rendered groups with
     `promtool check rules` and unit-tests every alert with `promtool test rules` (tests/data/alerts-test.yaml).
     Operator alerts keep only `job`, so that two releases' alerts stay apart.
     Prometheus' own {{ $labels }} templates are written as {{`{{ … }}`}} so Helm leaves them alone. */}}
{{- define "flopwise.alertGroups" -}}
{{- $r := .Values.metrics.prometheusRule }}
{{- $job := printf "job=%q" (default (printf "%s-metrics" (include "flopwise.fullname" .)) $r.job) }}
{{- $campaign := `{{ $labels.namespace }}/{{ $labels.campaign }}` }}
{{- $finished := printf `max by (namespace, campaign) (flopwise_campaign_phase{%s, phase=~"Succeeded|Failed"}) == 1` $job }}
groups:
  - name: flopwise-campaigns
    rules:
      - alert: FlopwiseCampaignFailed
        expr: max by (namespace, campaign) (max_over_time(flopwise_campaign_phase{ {{- $job }}, phase="Failed"}[2m])) == 1
        labels:
          severity: warning
        annotations:
          summary: Campaign {{ $campaign }} failed.
          description: >-
            TrainingCampaign {{ $campaign }} is in phase Failed: it launches nothing more. Its status message and
            conditions say why (kubectl describe trainingcampaign -n {{`{{ $labels.namespace }}`}}
            {{`{{ $labels.campaign }}`}}). The alert lasts until the campaign is deleted.
      - alert: FlopwiseCampaignDegraded
        expr: >-
          max by (namespace, campaign)
          (max_over_time(flopwise_campaign_condition{ {{- $job }}, condition="Degraded", status="true"}[2m])) == 1
        for: {{ $r.degradedFor }}
        labels:
          severity: warning
        annotations:
          summary: Campaign {{ $campaign }} has been Degraded for {{ $r.degradedFor }}.
          description: >-
            TrainingCampaign {{ $campaign }} has condition Degraded=True (e.g. reason Forbidden: the operator's RBAC
            refuses a call, nothing is launched). Its reason and message name the cause.
      - alert: FlopwiseBudgetNearlyUsed
        expr: >-
          max by (namespace, campaign) (flopwise_budget_used_ratio{ {{- $job }}}) >= {{ $r.budgetUsedRatio }}
          unless on (namespace, campaign) ({{ $finished }})
        labels:
          severity: info
        annotations:
          summary: Campaign {{ $campaign }} has used {{`{{ $value | humanizePercentage }}`}} of its budget.
          description: >-
            Reserved plus spent is {{`{{ $value | humanizePercentage }}`}} of the budget of TrainingCampaign
            {{ $campaign }} (the tighter of FLOPs and dollars). Expected once the final run is reserved; before
            that, the earlier phases cost more than planned and the final run may not fit.
      - alert: FlopwiseBudgetForecastOverrun
        expr: >-
          (max by (namespace, campaign) (flopwise_budget_forecast_dollars{ {{- $job }}})
          > on (namespace, campaign) max by (namespace, campaign) (flopwise_budget_dollars{ {{- $job }}}))
          unless on (namespace, campaign) ({{ $finished }})
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: Campaign {{ $campaign }} is forecast to cost more than its dollar budget.
          description: >-
            At the MFU its runs measured, the rest of the plan of TrainingCampaign {{ $campaign }} costs
            ${{`{{ $value | humanize }}`}} in all, above its dollar budget: runs will be refused for lack of budget
            (condition BudgetExhausted). Slow runs: check the pool's peakFlops and the trainer's MFU.
      - alert: FlopwiseCampaignNotReconciled
        expr: >-
          time() - max by (namespace, campaign) (flopwise_campaign_observed_timestamp_seconds{ {{- $job }}})
          > {{ $r.notReconciledSeconds }}
          unless on (namespace, campaign) ({{ $finished }})
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: The operator has not reconciled campaign {{ $campaign }} for {{`{{ $value | humanizeDuration }}`}}.
          description: >-
            An active campaign is reconciled at least once a minute (the resync); TrainingCampaign {{ $campaign }}
            was last observed {{`{{ $value | humanizeDuration }}`}} ago. Look at the operator's log and
            flopwise_reconcile_errors_total.
  - name: flopwise-operator
    rules:
      - alert: FlopwiseOperatorDown
        expr: max by (job) (up{ {{- $job }}}) == 0 or absent(up{ {{- $job }}})
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: No flopwise operator replica can be scraped.
          description: >-
            Prometheus has no reachable target for {{ $job }} (release {{ .Release.Namespace }}/{{ .Release.Name }}).
            Without the operator nothing launches, no result is recorded and no run is cancelled; Jobs already
            running go on.
      - alert: FlopwiseNoLeader
        expr: max by (job) (flopwise_leader{ {{- $job }}}) == 0
        for: 5m
        labels:
          severity: critical
        annotations:
          summary: No flopwise operator replica holds the leader Lease.
          description: >-
            Replicas are up but none acts (Lease {{ .Release.Namespace }}/{{ .Values.leaderElection.leaseName }}):
            look for leader-election errors in their logs (RBAC on leases, the API server unreachable).
      - alert: FlopwiseMultipleLeaders
        expr: sum by (job) (flopwise_leader{ {{- $job }}}) > 1
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $value }}`}} flopwise operator replicas say they lead."
          description: >-
            More than one replica has flopwise_leader 1 for 5 minutes. Status writes and Job names keep this
            safe, but work is duplicated: check the replicas' clocks and the Lease
            {{ .Release.Namespace }}/{{ .Values.leaderElection.leaseName }}.
      - alert: FlopwiseReconcileErrors
        expr: >-
          sum by (job) (rate(flopwise_reconcile_errors_total{ {{- $job }}}[5m]))
          / sum by (job) (rate(flopwise_reconcile_duration_seconds_count{ {{- $job }}}[5m])) > {{ $r.reconcileErrorRatio }}
        for: 15m
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $value | humanizePercentage }}`}} of the operator's reconcile passes fail."
          description: >-
            Reconcile passes raise errors (retried with back-off): the operator's log has them. Common causes: the
            API server unreachable, RBAC, an admission webhook refusing Jobs.
      - alert: FlopwiseJobsFailing
        expr: >-
          sum by (job) (increase(flopwise_jobs_failed_total{ {{- $job }}}[1h])) >= {{ $r.jobsFailedMin }}
          and sum by (job) (increase(flopwise_jobs_failed_total{ {{- $job }}}[1h]))
          > {{ $r.jobsFailedRatio }} * sum by (job) (increase(flopwise_jobs_created_total{ {{- $job }}}[1h]))
        labels:
          severity: warning
        annotations:
          summary: "{{`{{ $value | humanize }}`}} training Jobs failed in the last hour."
          description: >-
            More than {{ $r.jobsFailedRatio }} of the Jobs created in the last hour failed (trainer errors,
            deadlines, evictions, lost nodes). Each failure is charged its reservation; the engine retries a
            failed run once by default. The failed runs' Pods and the campaigns' events say why.
      - alert: FlopwiseWorkQueueBacklog
        expr: max by (job) (min_over_time(flopwise_queue_depth{ {{- $job }}}[15m])) > 0
        labels:
          severity: warning
        annotations:
          summary: The operator's work queue has not emptied for 15 minutes.
          description: >-
            {{`{{ $value }}`}} campaign reconciles have been waiting at every moment for 15 minutes: the workers
            cannot keep pace (operator.workers, the operator's CPU limit, slow fits).
{{- end }}
