#!/bin/bash
# speed.sh NAME CT MASK CODE OUT: whole `sopi register` (automatic spine mask, default threads) of paper seed 0 cases 0-9
PROTOCOL=${PROTOCOL:-paper}
name=$1; ct=$2; mask=$3; code=$4; out=$5
P=/work/main/.venv/bin/python
mkdir -p /tmp/s28/cases
for i in 0 1 2 3 4 5 6 7 8 9; do
  d=/tmp/s28/cases/${name}_${PROTOCOL}0_$i
  [ -f $d/xray.mha ] || PYTHONPATH=/work/main/SOPIRegistration $P -m sopi --progress none simulate $ct --mask $mask --protocol $PROTOCOL --realistic --seed 0 --case $i --cases 10 --out $d > /dev/null 2>&1
  PYTHONPATH=$code /usr/bin/time -o /tmp/s28/t.txt -f "%e %M" $P -m sopi --progress none register --ct $ct --xray $d/xray.mha --init $d/init.json --seed $i --out $d/res_$(basename $(dirname $code)).json > /dev/null 2>&1; r=$(tail -1 /tmp/s28/t.txt)
  echo "$name $i $r" >> $out
done
