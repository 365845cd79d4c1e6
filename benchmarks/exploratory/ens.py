from common import *  # noqa: F403 - the shared data, folds and helpers of these scripts
import glob
O={p.split('oof_')[1][:-4]:np.load(p) for p in glob.glob(OUT+'oof_*.npy')}
for n,o in O.items(): print(n, round(score(o),4))
k=O['knn_sel']
def perfold(o): return np.array([np.mean(S[te,np.argmin(o[te],1)]) for i,tr,te in folds()])
for n in O:
    if n=='knn_sel': continue
    for a in [0.3,0.5,0.7]:
        e=a*O[n]+(1-a)*k; d=perfold(e)-perfold(k)
        print(f'ens {n} a={a}', round(score(e),4), 'diff per fold',np.round(d,4))
