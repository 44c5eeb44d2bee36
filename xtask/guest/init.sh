#!/bin/busybox sh
# /init of the kernel matrix's initramfs (`cargo xtask test-kernels`): mounts what lockdown needs,
# loads the modules Debian builds as modules (listed in /modules/order, dependencies first), runs
# /scenario.sh, and powers the guest off. The serial console carries everything to the host.

/bin/busybox --install -s /bin
export PATH=/bin LD_LIBRARY_PATH=/lib/x86_64-linux-gnu

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t bpf bpf /sys/fs/bpf

for m in $(cat /modules/order); do
    insmod "/modules/$m" || echo "LDK-MODULE $m failed to load"
done

# /etc/ldk-model: the model-vs-program pass's number of test runs and seed.
read -r cases seed </etc/ldk-model
LOCKDOWN=/usr/sbin/lockdown \
    LOCKDOWN_PIN_ROOT=/sys/fs/bpf/lockdown \
    LOCKDOWN_RUN_DIR=/run/lockdown \
    MODEL_VS_BPF=/usr/libexec/model_vs_bpf \
    MODEL_CASES=$cases \
    MODEL_SEED=$seed \
    sh /scenario.sh
poweroff -f
