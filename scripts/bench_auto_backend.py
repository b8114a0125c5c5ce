"""auto backend at 8K: which backend auto picks (measured once) and its speed vs dense causal SDPA.

    OMP_WAIT_POLICY=PASSIVE python scripts/bench_auto_backend.py
"""
import time, torch, torch.nn.functional as F
torch.set_num_threads(2)
from headlab import patterns as P
from headlab.kernels import sparse_attend, autotune
T=8192; g=torch.Generator().manual_seed(0)
q=torch.randn(1,9,T,64,generator=g); k=torch.randn(1,3,T,64,generator=g); v=torch.randn(1,3,T,64,generator=g)
ke,ve=k.repeat_interleave(3,1),v.repeat_interleave(3,1)
for name,p in [("window(256)",P.window(256)),("power(64,4,1)",P.power(64,4,1))]:
    t0=time.perf_counter(); sparse_attend(q,k,v,p); first=time.perf_counter()-t0
    print(name, "decision", autotune.DECISIONS, "first call s", round(first,1))
    td=[];ta=[]
    for _ in range(3):
        t0=time.perf_counter(); F.scaled_dot_product_attention(q,ke,ve,is_causal=True); td.append(time.perf_counter()-t0)
        t0=time.perf_counter(); sparse_attend(q,k,v,p); ta.append(time.perf_counter()-t0)
    print(f"{name}: dense {min(td):.3f}s auto {min(ta):.3f}s speedup {min(td)/min(ta):.2f}x")
