from exp_lin import *  # noqa: F403 - train() and the data of exp_lin.py
from tryage.predictors import neighbour_mean as _neighbour_mean
import sys
cfgs={'mlp_s50_list1':dict(kind='mlp',epochs=30,drop=0.1,pair=1.0),
      'mirt16_s50':dict(kind='mirt',epochs=30,drop=0.1,rank=16)}
for name in sys.argv[1:]:
    oof=np.zeros_like(Y); t0=time.time()
    for i,tr,te in folds():
        ysm=_neighbour_mean(E[tr],Y[tr],50)
        oof[te]=train(E[tr],ysm,E[te],**cfgs[name])
    np.save(f'{OUT}oof_{name}.npy',1-oof)
    print(name, round(score(1-oof),4), f'{time.time()-t0:.0f}s',flush=True)
