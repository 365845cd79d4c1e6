import os
os.environ.setdefault("OMP_NUM_THREADS","1"); os.environ["HF_HUB_OFFLINE"]="1"
import numpy as np, torch, time, json
torch.set_num_threads(1)
from tryage import QTable, ExpertLibrary
# The shared part of the exploratory scripts (each does `from common import *`), behind the README's "Measured on the same folds (exploratory ...)" figures.
# Run from the repository root with PYTHONPATH=shared, after caching the embeddings:
#   TRYAGE_EMB=emb.npy python benchmarks/exploratory/exp_knn.py   (then exp_router.py NAME "dict(...)",
#   exp_lin.py CONFIG, exp_sm.py CONFIG, exp_task.py, ens.py, cost.py NAME...); OOF arrays go to $TRYAGE_OUT.
# emb.npy = PerceptivePredictor().encode(QTable.from_file(train.jsonl).prompts), saved with np.save.
DATA=os.path.join(os.path.dirname(__file__), '..', '..', '..', 'shared', 'data', 'llmrouter')
OUT=os.environ.get('TRYAGE_OUT', '/tmp/tryage-exploratory/'); os.makedirs(OUT, exist_ok=True)
T=QTable.from_file(os.path.join(DATA, 'train.jsonl'))
E=np.load(os.environ['TRYAGE_EMB']).astype(np.float32)
S=T.scores if hasattr(T,'scores') else 1-T.losses
L=T.losses
tasks=np.array(T.column('task'))
order=np.random.default_rng(0).permutation(len(T)); parts=np.array_split(order,5)
def folds():
    for i,te in enumerate(parts):
        tr=np.sort(np.concatenate(parts[:i]+parts[i+1:])); yield i,tr,np.sort(te)
def score(pred_loss, idx=None):
    idx=np.arange(len(T)) if idx is None else idx
    c=np.argmin(pred_loss[idx] if pred_loss.shape[0]==len(T) else pred_loss,1)
    return float(np.mean(S[idx,c]))
def unit(x): return x/np.maximum(np.linalg.norm(x,axis=1,keepdims=True),1e-12)
def knn_pred(Etr,Ltr,Ete,k):
    s=unit(Ete)@unit(Etr).T
    nn=np.argpartition(-s,k-1,axis=1)[:,:k]; return Ltr[nn].mean(1)
