#!/system/bin/sh
# Device side: print what moves benchmark figures - big cores, governors, temperatures, thermal
# status, battery, screen, airplane mode. Read-only: it changes nothing on the phone.
#
#   adb push android_bench/device_state.sh /data/local/tmp/ecbdeploy_device_state.sh
#   adb shell sh /data/local/tmp/ecbdeploy_device_state.sh
#
# Works without root; what the phone hides prints as '?'. Run it before and after a benchmark:
# a rise in temperature or thermal status between the two means the later figures were throttled.

sys=${ECBDEPLOY_SYSFS:-/sys}  # overridable only so the tests can give it a fake /sys
value() { cat "$1" 2>/dev/null || echo "?"; }
cpus=$(ls -d "$sys"/devices/system/cpu/cpu[0-9]* 2>/dev/null)

echo "== CPUs: max frequency (kHz) and governor"
for dir in $cpus; do
  echo "${dir##*/}  max=$(value "$dir/cpufreq/cpuinfo_max_freq")  now=$(value "$dir/cpufreq/scaling_cur_freq")" \
       " governor=$(value "$dir/cpufreq/scaling_governor")"
done
# One taskset mask per cluster, fastest first: combine the first ones to pin to the big cores.
for freq in $(for dir in $cpus; do value "$dir/cpufreq/cpuinfo_max_freq"; done | grep -E '^[0-9]+$' | sort -rn | uniq); do
  mask=0
  for dir in $cpus; do
    [ "$(value "$dir/cpufreq/cpuinfo_max_freq")" = "$freq" ] && mask=$((mask | (1 << ${dir##*cpu})))
  done
  printf 'cluster at %s kHz: taskset mask %x\n' "$freq" "$mask"
done

echo "== Thermal"
if command -v dumpsys >/dev/null 2>&1; then
  # Status 0 = none, 1 = light, 2 = moderate, 3+ = severe throttling.
  dumpsys thermalservice 2>/dev/null | grep -E "Thermal Status|Temperature\{" | head -n 20
fi
for zone in "$sys"/class/thermal/thermal_zone*; do
  [ -e "$zone/temp" ] || continue
  echo "$(value "$zone/type")  $(value "$zone/temp")"
done | head -n 30

echo "== Power and screen"
if command -v dumpsys >/dev/null 2>&1; then
  dumpsys battery 2>/dev/null | grep -E "AC powered|USB powered|level|temperature|status"
  dumpsys power 2>/dev/null | grep -E "mWakefulness=|mStayOn=" | head -n 2
fi
if command -v settings >/dev/null 2>&1; then
  echo "airplane_mode_on=$(settings get global airplane_mode_on 2>/dev/null)"
fi
exit 0
