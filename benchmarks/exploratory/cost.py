from common import *  # noqa: F403 - the shared data, folds and helpers of these scripts
import sys; sys.path.insert(0,'benchmarks')
from llmrouter_quality import cost_report
lib=ExpertLibrary.from_json(os.path.join(DATA, 'models.json'),names=T.experts)
single=0.6171786181673682; oracle=0.7947570457805376
k=np.load(OUT+'oof_knn_sel.npy')
def pf(o): return np.array([np.mean(S[te,np.argmin(o[te],1)]) for i,tr,te in folds()])
for name in sys.argv[1:]:
    o=np.load(f'{OUT}oof_{name}.npy')
    for lab,x in ((name,o),(name+'+knn',(o+k)/2)):
        r=cost_report(x,T,lib,single,oracle,'llama-3.1-nemotron-51b-instruct')
        print(lab, round(score(x),4), 'diff/fold',np.round(pf(x)-pf(k),4), 'price share',round(r['cost']['share_of_best_single'] or -1,3),'size B',round((r['size']['smallest_mean_matching_best_single'] or 0)/1e9,2), 'apgr',round(r['cost']['apgr'],3),round(r['size']['apgr'],3))
