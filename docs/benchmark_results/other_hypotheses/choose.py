"""choose.py [K] [RULE]: the per-run table of docs/benchmarks.md (eleventh session) from passes.jsonl and the stored
results: each recorded case given the most confident of its result and opt from the best K other hypotheses of each
searched pass, which count only where not flagged (RULE "trusted", the default) or with RULE (a number) as handicap."""
import json, glob, csv
import sys, os
B=os.path.join(os.path.dirname(os.path.abspath(__file__)), '..') + '/'
rows = {('ts_pelvis_ct.nii.gz','paper',0): 'spine_in_search/pelvis_paper_s0', ('ts_pelvis_ct.nii.gz','paper',1): 'spine_in_search/pelvis_paper_s1',
 ('ts_pelvis_ct.nii.gz','wide',0): 'spine_in_search/pelvis_wide_s0', ('ts_pelvis_ct.nii.gz','wide',1): 'spine_in_search/pelvis_wide_s1',
 ('popi_ct.nii.gz','wide',1): 'spine_in_search/chest_wide_s1', ('popi_ct.nii.gz','wide',0): 'held_out_thorax/wide_s0',
 ('popi_ct.nii.gz','paper',0): 'held_out_thorax/rejudge/popi_paper_s0', ('popi_ct.nii.gz','paper',1): 'held_out_thorax/rejudge/popi_paper_s1',
 ('sample_ct.nii.gz','wide',1): 'spine_in_search/sample_wide_s1', ('sub-ct_label-22_ct.nii.gz','wide',1): 'spine_in_search/tptbox_wide_s1',
 ('lidc_hu.nii.gz','wide',1): 'spine_in_search/lidc_wide_s1', ('sample_ct.nii.gz','wide',0): 'depth_scanned_matches/old_sample_wide_s0',
 ('sub-ct_label-22_ct.nii.gz','wide',0): 'depth_scanned_matches/old_tptbox_wide_s0', ('lidc_hu.nii.gz','wide',0): 'depth_scanned_matches/old_lidc_wide_s0',
 ('sub-ct_label-22_ct.nii.gz','paper',1): 'held_out_thorax/rejudge/paper_s1/sub-ct_label-22_ct', ('sub-ct_label-22_ct.nii.gz','paper',3): 'held_out_thorax/rejudge/paper_s3/sub-ct_label-22_ct'}
recs = {}
for f in [os.path.join(os.path.dirname(os.path.abspath(__file__)), 'passes.jsonl')]:
    for l in open(f):
        r = json.loads(l); recs.setdefault((r['ct'], r['protocol'], r['seed'], r['case']), r)
def shown(d): return d['spine'] is None or d['spine'] >= 0.5
K = int(sys.argv[1]) if len(sys.argv) > 1 else 1  # other hypotheses per searched pass
RULE = sys.argv[2] if len(sys.argv) > 2 else 'trusted'  # 'trusted': an alternative counts only where not flagged; a number: its handicap
T = dict(n=0, bs=0, as_=0, b10=0, a10=0, bfs=0, afs=0, buf=0, auf=0, br=0, ar=0, mism=0)
print('| CT, start, seed | before: successes, < 10 mm | after | successes flagged before → after | mean DRRs per case before → after | cases that changed (mTRE mm, confidence) |')
print('|---|---|---|---|---|---|')
for key, d in rows.items():
    f = (glob.glob(B + d + '/results.csv') + glob.glob(B + d + '/*/results.csv'))[0]
    res = [r for r in csv.DictReader(open(f)) if r['method'] != 'Initial']
    bs=as_=b10=a10=bfs=afs=buf=auf=0; br=ar=0; changes=[]
    for r in res:
        m, fail, flag, conf, rend = float(r['mtre_mm']), r['failed']=='True', r['likely_failed']=='True', float(r['confidence']), int(r['renders'])
        am, afail, aflag, aconf, arend = m, fail, flag, conf, rend
        e = recs.get((*key, int(r['case'])))
        if e:
            final = [x for x in e['log'] if x['kind']=='final'][0]
            if abs(final['mtre'] - m) > 0.05:
                T['mism'] += 1; print('NOTE: stored', key, r['case'], m, 'HEAD', final['mtre'])
                m, fail, flag, conf, rend = final['mtre'], final['failed'], final['flagged'], final['conf'], final['renders']
            per = {}
            for x in e['log']:
                if x['kind'].startswith('alt-of:'): per.setdefault(x['kind'], []).append(x)
            chosen = [x for v in per.values() for x in v[:K]]
            best = final
            for x in chosen:
                if RULE == 'trusted' and x['flagged']:
                    continue
                handicap = 0.0 if RULE == 'trusted' else float(RULE)
                if (shown(x), x['conf'] - handicap) > (shown(best), best['conf']): best = x
            if final['flagged']:
                arend = rend + sum(x['renders'] for x in chosen)
            am, afail, aflag, aconf = best['mtre'], best['failed'], best['flagged'], best['conf']
            if best is not final: changes.append(f"case {r['case']}: {m:.1f} ({conf:.2f}) → {am:.1f} ({aconf:.2f})")
        bs += not fail; as_ += not afail; b10 += m < 10; a10 += am < 10
        bfs += (not fail) and flag; afs += (not afail) and aflag; buf += fail and not flag; auf += afail and not aflag
        br += rend; ar += arend
    n=len(res)
    for k,v in dict(n=n,bs=bs,as_=as_,b10=b10,a10=a10,bfs=bfs,afs=afs,buf=buf,auf=auf,br=br,ar=ar).items(): T[k]+=v
    print(f"| {d.split('/')[-1]} ({key[0].split('.')[0]}) | {bs}, {b10} | {as_}, {a10} | {bfs} → {afs} | {br/n:.0f} → {ar/n:.0f} | {'; '.join(changes) or 'none'} |")
print(T)
