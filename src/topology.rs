//! CPU topology: read from sysfs; spec strings like "1n2l4c1t".
