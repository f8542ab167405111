#!/bin/busybox sh
# /init of an nwf-fast vmlab test guest (PID 1 in a busybox initramfs).
#
# Loads the virtio modules listed in /etc/modules (dependency order), then
# reads its scenario from the kernel command line:
#   nwf.tag=N              the guest's tag (frames of NIC i carry tag N*16+i)
#   nwf.peer=MAC+IP        where legitimate frames go
#   nwf.spoof=MAC+IP       the addresses spoofed frames claim (optional)
#   nwf.net=MAC+IP/LEN     one per NIC, in order (NIC 0, 1, ...); a NIC that
#                          is not there yet (hot-plugged later) is waited for
#   nwf.run=I+send+KINDS+COUNT+PPS+SECS   a step of NIC I: nwf-send (its
#                          frames carry the step's number, 1, 2, ... per NIC)
#   nwf.run=I+sleep+SECS                  a step of NIC I: a pause
#   nwf.life=SECS          power off after this long, whatever happens
# Each NIC runs its steps in order, NICs in parallel. Everything it has to
# say goes to the console (the serial port, a file on the host) as lines
# starting with "NWF ".
export PATH=/bin
/bin/busybox mkdir -p /proc /sys /dev /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
/bin/busybox --install -s /bin
exec </dev/null >/dev/console 2>&1

say() { echo "NWF $*"; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

say boot uptime=$(uptime_s)
for m in $(cat /etc/modules); do
  insmod "/lib/modules/$m.ko" || say error insmod "$m"
done

TAG=0 PEER_MAC= PEER_IP= SPOOF_MAC= SPOOF_IP= LIFE=600 NNET=0 NRUN=0
for w in $(cat /proc/cmdline); do
  case "$w" in
    nwf.tag=*) TAG=${w#nwf.tag=} ;;
    nwf.peer=*) v=${w#nwf.peer=}; PEER_MAC=${v%%+*}; PEER_IP=${v#*+} ;;
    nwf.spoof=*) v=${w#nwf.spoof=}; SPOOF_MAC=${v%%+*}; SPOOF_IP=${v#*+} ;;
    nwf.net=*) v=${w#nwf.net=}; eval "NET_MAC_$NNET=\${v%%+*}; NET_IP_$NNET=\${v#*+}"; NNET=$((NNET + 1)) ;;
    nwf.run=*) eval "RUN_$NRUN=\${w#nwf.run=}"; NRUN=$((NRUN + 1)) ;;
    nwf.life=*) LIFE=${w#nwf.life=} ;;
  esac
done

# The last resort: a guest never outlives its scenario by much.
( sleep "$LIFE"; say lifetime over after "$LIFE" s, powering off; poweroff -f ) &

# The interface whose MAC is $1, if present.
dev_of() {
  for d in /sys/class/net/*; do
    [ "$(cat "$d/address" 2>/dev/null)" = "$1" ] && { echo "${d##*/}"; return 0; }
  done
  return 1
}

nic() {
  i=$1
  eval "mac=\$NET_MAC_$i ip=\$NET_IP_$i"
  tries=0
  until dev=$(dev_of "$mac"); do
    tries=$((tries + 1))
    [ "$tries" -gt $((LIFE * 5)) ] && { say error nic=$i mac=$mac never appeared; return 1; }
    sleep 0.2
  done
  ip addr add "$ip" dev "$dev" && ip link set "$dev" up || say error nic=$i if=$dev configuration failed
  say ready nic=$i if=$dev mac=$mac ip=$ip uptime=$(uptime_s)
  tag=$((TAG * 16 + i))
  spoof=
  [ -n "$SPOOF_MAC" ] && spoof="-S $SPOOF_MAC"
  [ -n "$SPOOF_IP" ] && spoof="$spoof -I $SPOOF_IP"
  n=0 k=0
  while [ "$k" -lt "$NRUN" ]; do
    eval "step=\$RUN_$k"
    k=$((k + 1))
    [ "${step%%+*}" = "$i" ] || continue
    n=$((n + 1))
    set -- $(echo "$step" | tr '+' ' ')
    say step nic=$i n=$n begin $2 uptime=$(uptime_s)
    case "$2" in
      send) nwf-send -i "$dev" -s "$mac" -a "${ip%/*}" -d "$PEER_MAC" -A "$PEER_IP" $spoof -g "$tag" -x "$n" -k "$3" -n "$4" -r "$5" -t "$6"; rc=$? ;;
      sleep) sleep "$3"; rc=$? ;;
      *) say error nic=$i unknown step "$2"; rc=2 ;;
    esac
    say step nic=$i n=$n end rc=$rc uptime=$(uptime_s)
  done
  say done nic=$i uptime=$(uptime_s)
}

i=0
while [ "$i" -lt "$NNET" ]; do
  nic "$i" &
  i=$((i + 1))
done
say started nics=$NNET steps=$NRUN life=$LIFE
# PID 1 never exits (that would panic the kernel): wait for the NICs, then idle until the lifetime ends.
wait
while :; do sleep 3600; done
