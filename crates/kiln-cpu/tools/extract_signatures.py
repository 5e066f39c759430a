# Lists the op-trait method signatures of burn-backend (from cargo's registry), with the trait's
# `B` written as `Self`: the input of the `forward!` lists in ../src/delegate.rs. Re-run it after
# bumping burn and diff against delegate.rs; a method missing there would silently run the
# inner backend's *default* body instead of its own kernel.
#
#   python3 tools/extract_signatures.py 0.21.0 > /tmp/sigs.txt
import glob, os, re, sys

version = sys.argv[1] if len(sys.argv) > 1 else "0.21.0"
root = glob.glob(os.path.expanduser(f'~/.cargo/registry/src/*/burn-backend-{version}/src/backend/ops'))[0]
files={'FloatTensorOps':'tensor.rs','IntTensorOps':'int_tensor.rs','BoolTensorOps':'bool_tensor.rs','ModuleOps':'modules/base.rs','ActivationOps':'activation.rs','QTensorOps':'qtensor.rs','TransactionOps':'transaction.rs'}
def strip_comments(s):
    s=re.sub(r'//[^\n]*','',s)
    return s
for trait,f in files.items():
    src=strip_comments(open(f'{root}/{f}').read())
    i=src.index(f'pub trait {trait}<B: Backend>')
    i=src.index('{',i)+1
    depth=1; j=i; out=[]
    while depth>0:
        m=re.compile(r'\bfn\s').search(src,j)
        # find closing brace of trait before m
        k=j
        while True:
            c=src[k]
            if c=='}' : break
            if m and k==m.start(): break
            k+=1
        if src[k]=='}' and not (m and k==m.start()): break
        # parse signature until ; or { at depth 0 of parens/angles
        k=m.start(); p=0
        while True:
            c=src[k]
            if c in '(<[': p+=1
            elif c in ')>]':
                if c=='>' and src[k-1]=='-': pass
                else: p-=1
            elif c==';' and p==0:
                sig=src[m.start():k]; has_body=False; j=k+1; break
            elif c=='{' and p==0:
                sig=src[m.start():k]; has_body=True
                d=1;k+=1
                while d: 
                    if src[k]=='{': d+=1
                    elif src[k]=='}': d-=1
                    k+=1
                j=k; break
            k+=1
        sig=' '.join(sig.split())
        sig=re.sub(r'\bB\b','Self',sig)
        out.append((sig,has_body))
    print(f'// {trait}: {len(out)} methods, {sum(1 for s,b in out if b)} with default bodies', file=sys.stderr)
    print(f'@@ {trait}')
    for s,b in out: print(s)
