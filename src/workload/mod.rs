//! The spawn pipeline: config, spawn/handle, worker bodies, report.
