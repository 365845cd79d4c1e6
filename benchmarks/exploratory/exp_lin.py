from common import *  # noqa: F403 - the shared data, folds and helpers of these scripts
import sys
import torch.nn as nn, torch.nn.functional as F
Y=S.astype(np.float32)  # P(correct) targets (commongen fractional)
def train(Xtr,Ytr,Xte,kind,hidden=256,wd=1e-2,epochs=60,lr=1e-3,drop=0.1,rank=16,seed=0,pair=0.0,bs=64):
    torch.manual_seed(seed)
    mu,sd=Xtr.mean(0),Xtr.std(0)+1e-6
    xtr=torch.tensor((Xtr-mu)/sd); xte=torch.tensor((Xte-mu)/sd); y=torch.tensor(Ytr)
    d=xtr.shape[1]; k=y.shape[1]
    if kind=='lin': m=nn.Sequential(nn.Dropout(drop),nn.Linear(d,k))
    elif kind=='mlp': m=nn.Sequential(nn.Dropout(drop),nn.Linear(d,hidden),nn.GELU(),nn.Dropout(drop),nn.Linear(hidden,k))
    elif kind=='mirt': m=nn.Sequential(nn.Dropout(drop),nn.Linear(d,hidden),nn.GELU(),nn.Dropout(drop),nn.Linear(hidden,rank),nn.Linear(rank,k))
    opt=torch.optim.AdamW(m.parameters(),lr=lr,weight_decay=wd)
    g=torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        m.train(); perm=torch.randperm(len(xtr),generator=g)
        for s in range(0,len(perm),bs):
            idx=perm[s:s+bs]; out=m(xtr[idx]); loss=F.binary_cross_entropy_with_logits(out,y[idx])
            if pair>0:
                # pairwise: for each prompt, softmax over experts vs normalized correct distribution (listwise)
                t=y[idx]; tt=t/(t.sum(1,keepdim=True)+1e-6); has=t.sum(1)>0
                if has.any(): loss=loss+pair*(-(tt[has]*F.log_softmax(out[has],1)).sum(1).mean())
            opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    with torch.no_grad(): return torch.sigmoid(m(xte)).numpy()
if __name__ == '__main__':   # exp_sm.py imports train() from here
    configs={
     'lin_wd1e-2_e30':dict(kind='lin',epochs=30,lr=1e-3,drop=0.2),
     'mlp256_e20':dict(kind='mlp',epochs=20),
     'mlp256_e40_d3':dict(kind='mlp',epochs=40,drop=0.3),
     'mirt16_e30_d3':dict(kind='mirt',epochs=30,drop=0.3,rank=16),
     'mlp256_list1_e30_d3':dict(kind='mlp',epochs=30,drop=0.3,pair=1.0),
    }
    which=sys.argv[1:] or list(configs)
    for name in which:
        cfg=configs[name]; t0=time.time()
        oof=np.zeros_like(Y); fs=[]
        for i,tr,te in folds():
            p=train(E[tr],Y[tr],E[te],**cfg); oof[te]=p; fs.append(np.mean(S[te,np.argmax(p,1)]))
        np.save(f'{OUT}oof_{name}.npy',1-oof)
        print(name, round(score(1-oof),4), np.round(fs,3), f'{time.time()-t0:.0f}s', flush=True)
