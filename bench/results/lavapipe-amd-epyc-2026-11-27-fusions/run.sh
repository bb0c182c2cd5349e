#!/bin/bash
# Side by side on lavapipe: the two fusions fused and apart, and adam+bce fused without its workgroup barrier.
# /tmp/vae-main: commit 8f5606f, `cargo build --release`. /tmp/vae-nobarrier: the same with one change in
# shaders/adam.wgsl, for timing only: adam_with_bce's BCE workgroups skip workgroup_sum (lane 0 writes its own
# sum, so the BCE value is wrong; Adam's update is unchanged), so the kernel holds no barrier.
export NODEVICE_SELECT=1 WGPU_BACKEND=vulkan VK_DRIVER_FILES=/usr/share/vulkan/icd.d/lvp_icd.x86_64.json
cd /work/main
D=/tmp/fus
# One tuning per binary (their shaders differ, so their caches do).
/tmp/vae-main profile --latent 20 --steps 1 --tune-cache $D/main-apart.txt > $D/tune-main.log 2>&1
/tmp/vae-nobarrier profile --latent 20 --steps 1 --tune-cache $D/nb.txt > $D/tune-nobarrier.log 2>&1
cp $D/main-apart.txt $D/main-fused.txt; printf 'adam+bce\tfused\nreparam+fc3\tfused\n' >> $D/main-fused.txt
printf 'adam+bce\tapart\nreparam+fc3\tapart\n' >> $D/main-apart.txt
printf 'adam+bce\tfused\nreparam+fc3\tapart\n' >> $D/nb.txt
for r in 1 2 3; do
  /tmp/vae-main profile --latent 20 --steps 10 --tune-cache $D/main-apart.txt --trace /dev/null > $D/round$r-apart.log 2>&1
  /tmp/vae-main profile --latent 20 --steps 10 --tune-cache $D/main-fused.txt --trace /dev/null > $D/round$r-fused.log 2>&1
  /tmp/vae-nobarrier profile --latent 20 --steps 10 --tune-cache $D/nb.txt --trace /dev/null > $D/round$r-adam-bce-fused-no-barrier.log 2>&1
done
echo done > $D/DONE
