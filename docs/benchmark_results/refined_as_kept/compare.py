import json, sys
for ct in ("sample","pelvis","chest"):
  for proto in ("paper","wide"):
    try:
      off=[json.loads(l) for l in open(f"{ct}_{proto}_off.jsonl")]; on={json.loads(l)['case']:json.loads(l) for l in open(f"{ct}_{proto}_on.jsonl")}
    except FileNotFoundError: continue
    n=0; s={'off':[0,0,0,0],'on':[0,0,0,0]}
    for r in off:
      o=on.get(r['case'])
      if o is None: continue
      n+=1
      for k,x in (('off',r),('on',o)):
        s[k][0]+=x['success']; s[k][1]+=x['final_mtre_mm']<10; s[k][2]+=(not x['success']) and not x['likely_failed']; s[k][3]+=x['renders']
      if r['final_mtre_mm']!=o['final_mtre_mm'] or r['renders']!=o['renders'] or r['confidence']!=o['confidence']:
        if '-v' in sys.argv:
          print(ct,proto,r['case'],'off',r['final_mtre_mm'],r['confidence'],r['likely_failed'],r['renders'],r['time_s'],'| on',o['final_mtre_mm'],o['confidence'],o['likely_failed'],o['renders'],o['time_s'])
    print(ct, proto, n, 'cases: success / <10mm / failed unflagged / renders  off', s['off'], ' on', s['on'])
