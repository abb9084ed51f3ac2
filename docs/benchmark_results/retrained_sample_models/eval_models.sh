# usage: eval_models.sh old|new protocol realistic(0|1) cases
cd /work/main
S=SOPIRegistration/Resources/SampleData
which=$1; protocol=$2; real=$3; cases=$4
if [ $which = old ]; then M=/tmp/s24/old_models; else M=SOPIRegistration/Resources/Models; fi
extra=""; tag=clean
if [ $real = 1 ]; then extra="--realistic"; tag=real; fi
OMP_NUM_THREADS=1 .venv/bin/sopi --progress none benchmark --ct $S/sample_ct.nii.gz --mask $S/sample_ct_vertebrae.nii.gz \
  --protocol $protocol --cases $cases --seed 0 --methods rtpi,rtpi+opt,sopi,sopi+opt --model $M/rtpi_sample_ct.pt \
  --fine-model $M/fine_sample_ct.pt --device cpu $extra --out /tmp/s24/eval/${which}_${protocol}_${tag} > /tmp/s24/eval/${which}_${protocol}_${tag}.log 2>&1
