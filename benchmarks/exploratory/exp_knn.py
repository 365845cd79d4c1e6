from common import *  # noqa: F403 - the shared data, folds and helpers of these scripts
ks=[5,10,20,30,50,75,100,150,200,300,400]
res={k:[] for k in ks}; oof={k:np.zeros_like(L) for k in ks}
for i,tr,te in folds():
    for k in ks:
        p=knn_pred(E[tr],L[tr],E[te],k); oof[k][te]=p; res[k].append(score(p,None) if False else float(np.mean(S[te,np.argmin(p,1)])))
for k in ks: print(k, round(np.mean(res[k]),4), np.round(res[k],3), 'oof',round(score(oof[k]),4))
# inner CV choice of k
oofsel=np.zeros_like(L); chosen=[]
for i,tr,te in folds():
    rng=np.random.default_rng(1); inner=np.array_split(rng.permutation(tr),4)
    sc={}
    for k in ks:
        v=[]
        for j,ite in enumerate(inner):
            itr=np.concatenate(inner[:j]+inner[j+1:])
            p=knn_pred(E[itr],L[itr],E[ite],k); v.append(np.mean(S[ite,np.argmin(p,1)]))
        sc[k]=np.mean(v)
    kb=max(sc,key=sc.get); chosen.append(kb)
    oofsel[te]=knn_pred(E[tr],L[tr],E[te],kb)
print('inner-CV chosen',chosen,'oof',round(score(oofsel),4))
np.save(OUT+'oof_knn_sel.npy',oofsel)
