# reruns the multi-pass cases of each wide row with the exp code; other cases keep the baseline result (identical by construction)
while [ ! -f /tmp/s35/wide_baseline_done ]; do sleep 10; done
for d in chest pelvis sample tptbox; do
  src=/tmp/s35/ind/${d}_wide_s0; dst=/tmp/s35/x/${d}_wide_s0
  mkdir -p $dst
  for c in $src/case_*; do mkdir -p $dst/$(basename $c); cp $c/{xray.mha,geometry.json,gt.json,init.json,chain.json,result.json,wall_s.txt} $dst/$(basename $c)/; done
  python3 docs/benchmark_results/independent_xrays/closed_readings/multipass.py $src > $dst/multipass.txt
done
for d in chest pelvis sample tptbox; do
  dst=/tmp/s35/x/${d}_wide_s0
  for i in $(cut -d' ' -f2- $dst/multipass.txt); do
    rm -f $dst/case_$i/result.json
    bash docs/benchmark_results/independent_xrays/closed_readings/reg.sh $dst/case_$i $dst/case_$i/result.json
    cp $dst/case_$i/result.json.wall $dst/case_$i/wall_s.txt
  done
  cd /work/exp && PYTHONPATH=SOPIRegistration /work/main/.venv/bin/python -c "
import sys; sys.path.insert(0, 'benchmarks'); from independent_xrays import score; from pathlib import Path; score(Path('$dst'))"
done
echo WIDEDONE
