"""scripts/bench: the benchmark of record of budgetd (a durable cluster on loopback, load from
separate processes, optionally a 3-member etcd in the same run). Not shipped with the daemon.

- ``cli``: options, plan and estimate, the run, the files it writes;
- ``loadgen``: the load-generator processes (workloads against budgetd and etcd);
- ``observe``: /proc CPU and RSS, the leader's /metrics, the machine;
- ``report``: medians, the markdown tables and the plot;
- ``etcd``: a 3-member etcd and the read-then-CAS budget recipe.
"""
