from common import *  # noqa: F403 - the shared data, folds and helpers of these scripts
from tryage.predictors import PerceptivePredictor
import sys
oof=np.zeros_like(L); fs=[]
kw=eval(sys.argv[2]) if len(sys.argv)>2 else {}
name=sys.argv[1]
enc=PerceptivePredictor(progress=False)
t0=time.time()
for i,tr,te in folds():
    r=PerceptivePredictor(seed=i,progress=False,**kw)
    r.fit(T.subset(tr),embeddings=E[tr]); p=r.predict_from_embeddings(E[te]); oof[te]=p
    fs.append(np.mean(S[te,np.argmin(p,1)]))
np.save(f'{OUT}oof_{name}.npy',oof)
print(name,kw,round(score(oof),4),np.round(fs,3),f'{time.time()-t0:.0f}s',flush=True)
