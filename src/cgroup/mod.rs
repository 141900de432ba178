//! One cgroup interface, two backends: cgroup v2 and v1 (hybrid hosts).
