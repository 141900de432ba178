//! VM mode: qemu/KVM runner, kernel discovery, initramfs, topology args, guest init.
