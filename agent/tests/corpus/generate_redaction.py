import uuid, random, string, base64, json
rnd = random.Random(20261126)
def r(chars, n): return ''.join(rnd.choice(chars) for _ in range(n))
A = string.ascii_letters + string.digits
U = string.ascii_uppercase + string.digits
HEX = '0123456789abcdef'
B64 = string.ascii_letters + string.digits + '+/'
URLSAFE = A + '_-'
def mixed(n):
    # random but guaranteed to have upper, lower, digit
    while True:
        s = r(A, n)
        if any(c.isupper() for c in s) and any(c.islower() for c in s) and any(c.isdigit() for c in s):
            return s
secrets = []
def add(name, text, core=None):
    secrets.append((name, text, core if core is not None else text))

# Provider formats
k = 'AKIA' + r('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16); add('aws access key id (AKIA)', k)
k = 'ASIA' + r('ABCDEFGHIJKLMNOPQRSTUVWXYZ234567', 16); add('aws temporary key id (ASIA)', k)
k = 'AKIAIOSFODNN7EXAMPLE'; add("aws documented example key id", k)
s = r(A + '/+', 40); add('aws secret access key (env)', f'AWS_SECRET_ACCESS_KEY={s}', s)
s = r(A + '/+', 40); add('aws secret access key (credentials file)', f'aws_secret_access_key = {s}', s)
s = r(A + '/+', 180); add('aws session token', f'aws_session_token={s}', s)
k = 'AIza' + r(URLSAFE, 35); add('google api key', k)
k = 'GOCSPX-' + r(URLSAFE, 28); add('google oauth client secret', k)
k = r(B64, 86) + '=='; add('azure storage account key', f'DefaultEndpointsProtocol=https;AccountName=arfprod;AccountKey={k};EndpointSuffix=core.windows.net', k[:40])
k = r(A, 3) + '8Q~' + r(A + '_~.-', 34); add('azure ad client secret', f'client credential {k} expired', k)
sig = r(A + '%', 30); add('azure sas signature', f'https://arfprod.blob.core.windows.net/backups?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2026-12-01T00:00:00Z&sig={sig}', sig)
k = 'LTAI' + r(A, 20); add('alibaba access key id', k)
k = 'dop_v1_' + r(HEX, 64); add('digitalocean pat', k)
k = 'HRKU-' + r(URLSAFE, 60); add('heroku api key', k)
k = 'fo1_' + r(URLSAFE, 43); add('fly.io token', k)
for p in ['ghp', 'gho', 'ghu', 'ghs', 'ghr']:
    k = f'{p}_' + r(A, 36); add(f'github {p} token', k)
k = 'github_pat_11' + r(U, 20) + '_' + r(A, 59); add('github fine-grained pat', k)
for p in ['glpat', 'gldt', 'glrt', 'glptt', 'glft']:
    k = f'{p}-' + r(URLSAFE, 20); add(f'gitlab {p} token', k)
k = 'GR1348941' + r(URLSAFE, 20); add('gitlab runner registration token', k)
k = 'ATATT3xFfGF0' + r(URLSAFE, 180); add('atlassian api token', k)
k = 'npm_' + r(A, 36); add('npm token', k)
k = 'pypi-AgEIcHlwaS5vcmc' + r(URLSAFE, 70); add('pypi token', k)
k = 'rubygems_' + r(HEX, 48); add('rubygems api key', k)
k = 'oy2' + r(string.ascii_lowercase + string.digits, 43); add('nuget api key', k)
k = 'dckr_pat_' + r(URLSAFE, 27); add('docker hub pat', k)
k = 'AKCp' + r(A, 69); add('jfrog api key', k)
k = r(A, 14) + '.atlasv1.' + r(URLSAFE, 67); add('terraform cloud token', k)
k = 'hvs.' + r(URLSAFE, 90); add('vault service token', k)
k = 'hvb.' + r(URLSAFE, 120); add('vault batch token', k)
k = 'dp.pt.' + r(A, 43); add('doppler personal token', k)
k = 'xoxb-' + r('0123456789', 12) + '-' + r('0123456789', 13) + '-' + r(A, 24); add('slack bot token', k)
k = 'xoxp-' + r('0123456789', 12) + '-' + r('0123456789', 12) + '-' + r('0123456789', 13) + '-' + r(HEX, 32); add('slack user token', k)
k = 'xapp-1-A' + r(U, 10) + '-' + r('0123456789', 13) + '-' + r(HEX, 64); add('slack app token', k)
k = 'https://hooks.slack.com/services/T' + r(U, 8) + '/B' + r(U, 10) + '/' + r(A, 24); add('slack webhook', k)
k = 'https://discord.com/api/webhooks/' + r('0123456789', 18) + '/' + r(URLSAFE, 68); add('discord webhook', k)
k = 'https://contoso.webhook.office.com/webhookb2/' + r(HEX, 8) + '-' + r(HEX, 4) + '@' + r(HEX, 8) + '/IncomingWebhook/' + r(HEX, 32) + '/' + r(HEX, 8); add('teams webhook', k)
k = r('0123456789', 10) + ':AA' + r(URLSAFE, 33); add('telegram bot token', k)
k = 'SK' + r(HEX, 32); add('twilio api key', k)
k = 'SG.' + r(URLSAFE, 22) + '.' + r(URLSAFE, 43); add('sendgrid api key', k)
k = 'key-' + r(HEX, 32); add('mailgun api key', k)
k = r(HEX, 32) + '-us14'; add('mailchimp api key', k)
k = 'sk_live_' + r(A, 24); add('stripe live secret key', k)
k = 'rk_live_' + r(A, 24); add('stripe restricted key', k)
k = 'whsec_' + r(A, 32); add('stripe webhook secret', k)
k = 'sq0atp-' + r(URLSAFE, 22); add('square access token', k)
k = 'sq0csp-' + r(URLSAFE, 43); add('square oauth secret', k)
k = 'access_token$production$' + r(string.ascii_lowercase + string.digits, 16) + '$' + r(HEX, 32); add('braintree access token', k)
k = 'shpat_' + r(HEX, 32); add('shopify access token', k)
k = 'shpss_' + r(HEX, 32); add('shopify shared secret', k)
k = 'NRAK-' + r(U, 27); add('new relic user key', k)
k = 'glc_' + r(A, 60) + '=='; add('grafana cloud token', k)
k = 'glsa_' + r(A, 32) + '_' + r(HEX, 8); add('grafana service account token', k)
k = 'sntrys_' + r(A + '+/=', 60); add('sentry auth token', k)
k = r(HEX, 32); add('sentry dsn key', f'https://{k}@o4505.ingest.us.sentry.io/4506', k)
k = 'PMAK-' + r(HEX, 24) + '-' + r(HEX, 34); add('postman api key', k)
k = 'lin_api_' + r(A, 40); add('linear api key', k)
k = 'dapi' + r(HEX, 32); add('databricks token', k)
k = 'sk-proj-' + r(URLSAFE, 80); add('openai project key', k)
k = 'sk-' + r(A, 20) + 'T3BlbkFJ' + r(A, 20); add('openai legacy key', k)
k = 'sk-ant-api03-' + r(URLSAFE, 93) + 'AA'; add('anthropic api key', k)
k = 'hf_' + r(string.ascii_letters, 34); add('hugging face token', k)
k = 'AGE-SECRET-KEY-1' + r('QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L', 58); add('age secret key', k)
# JWTs
def b64u(obj): return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip('=')
jwt = b64u({"alg":"HS256","typ":"JWT"}) + '.' + b64u({"sub":"svc-"+r(HEX,8),"admin":True}) + '.' + r(URLSAFE, 43)
add('jwt', jwt, jwt.split('.')[2])
jwt2 = b64u({"alg":"RS256","kid":r(HEX,8)}) + '.' + b64u({"iss":"https://issuer.example","exp":1900000000}) + '.' + r(URLSAFE, 86)
add('jwt in a cookie', f'Cookie: session={jwt2}; theme=dark', jwt2.split('.')[2])
# Private keys
for kind in ['RSA PRIVATE KEY', 'EC PRIVATE KEY', 'OPENSSH PRIVATE KEY', 'PRIVATE KEY', 'ENCRYPTED PRIVATE KEY', 'DSA PRIVATE KEY', 'PGP PRIVATE KEY BLOCK']:
    body = '\n'.join(r(B64, 64) for _ in range(3))
    add(f'pem {kind.lower()}', f'-----BEGIN {kind}-----\n{body}\n-----END {kind}-----', body.split('\n')[1])
body = '\n'.join(r(B64, 64) for _ in range(2))
add('private key cut off (no END line)', f'-----BEGIN RSA PRIVATE KEY-----\n{body}', body.split('\n')[1])
# Headers and URLs
t = r(A, 40); add('authorization bearer header', f'Authorization: Bearer {t}', t)
t = mixed(32); add('bearer token in prose', f'retrying with bearer {t}', t)
t = base64.b64encode(f'deploy:{mixed(16)}'.encode()).decode(); add('basic auth header', f'authorization: Basic {t}', t)
t = base64.b64encode(f'admin:{mixed(12)}'.encode()).decode(); add('proxy basic auth header', f'Proxy-Authorization: Basic {t}', t)
t = r(HEX, 32); add('x-api-key header (hex)', f'x-api-key: {t}', t)
t = mixed(40); add('set-cookie header', f'Set-Cookie: sid={t}; HttpOnly; Secure', t)
for scheme, user in [('postgres','checkout_app'),('postgresql','orders'),('mysql','root'),('mongodb+srv','svc'),('redis',''),('amqp','guest'),('amqps','events'),('ldap','cn=admin'),('ftp','backup'),('https','deployer'),('smtp','alerts'),('kafka','producer')]:
    pw = r(A, 6) + '-' + r(A, 10)
    add(f'{scheme} url password', f'{scheme}://{user}:{pw}@db-{r(string.ascii_lowercase,5)}.internal:5432/app', pw)
# Assignments
for key, sep, quote in [('password','=',''),('PASSWORD',': ',''),('db_password','=','"'),('DB_PASSWORD','=',"'"),('passwd','=',''),('pwd','=',''),('secret',': ','"'),('client_secret','=',''),('clientSecret',': ','"'),('api_key','=',''),('apiKey',': ','"'),('API_KEY','=',''),('access_key','=',''),('auth_key','=',''),('private_key',': ','"'),('token','=',''),('GITHUB_TOKEN','=',''),('credentials',': ','"'),('passphrase','=',''),('spring.datasource.password','=','')]:
    v = r(A, 4) + '-' + mixed(10)
    add(f'assignment {key}{sep.strip()}', f'{key}{sep}{quote}{v}{quote}', v)
v = mixed(14); add('json-quoted password', json.dumps({"user":"app","password":v}), v)
v = mixed(14); add('yaml password', f'spec:\n  env:\n  - name: DB_PASSWORD\n    value: ignored\n  password: {v}', v)
v = 'Tr0ub&dor' + r(A, 6); add('password with an ampersand', f'password={v}', v[5:])
v = mixed(16); add('jdbc password parameter', f'jdbc:postgresql://db:5432/app?user=app&password={v}&ssl=true', v)
v = mixed(16); add('ado.net connection string', f'Server=sql.internal;Database=app;User Id=sa;Password={v};', v)
v = mixed(44); add('unlabelled high-entropy key', f'key material {v} leaked in log', v)
v = mixed(32); add('unlabelled high-entropy key in json', json.dumps({"k": v}), v)
# Formats ARF's own rules lack, covered by the nosecrets-rules set.
k = 'v1.0-' + r(HEX, 24) + '-' + r(HEX, 146); add('cloudflare origin ca key', k, k[5:60])
k = 'M' + r(A, 25) + '.' + r(URLSAFE, 6) + '.' + r(URLSAFE, 38); add('discord bot token', k)
# Forms an outside review found passing (2026-11-27): names run on before the
# secret word, other header schemes, other assignment syntaxes, command lines,
# name/value pairs, encoded URLs. Drawn after everything above, so the values
# above stay as they were.
v = mixed(12); add('name run on before the word (PGPASSWORD)', f'PGPASSWORD={v} psql -h orders-db', v)
v = mixed(12); add('camelCase token name', f'accessToken: {v}', v)
v = mixed(12); add('pass after a separator (SMTP_PASS)', f'RABBITMQ_DEFAULT_PASS={v}', v)
v = r(A, 6) + '$9x!m@' + r(A, 8); add('django SECRET_KEY with punctuation', f'SECRET_KEY={v}', v)
v = r(HEX, 32); add('rails master key (hex)', f'RAILS_MASTER_KEY={v}', v)
v = r(HEX, 128); add('secret key base (long hex)', f'SECRET_KEY_BASE={v}', v)
v = r(HEX, 64); add('encryption key (hex)', f'ENCRYPTION_KEY={v}', v)
v = r(HEX, 40); add('authorization token scheme (hex)', f'Authorization: Token {v}', v)
v = str(uuid.UUID(int=rnd.getrandbits(128), version=4)); add('authorization splunk scheme (uuid)', f'Authorization: Splunk {v}', v)
v = r(HEX, 32); add('bare authorization header (hex)', f'authorization: {v}', v)
v = r(HEX, 32); add('bearer token (hex)', f'Authorization: Bearer {v}', v)
v = mixed(12); add('ruby hash rocket', f"{{'password' => '{v}'}}", v)
v = mixed(12); add('xml password element', f'<datasource><password>{v}</password></datasource>', v)
v = mixed(12); add('mysql password flag', f'mysqldump -uroot -p{v} orders > /backup/orders.sql', v)
v = mixed(12); add('password flag with a space', f'pg_restore --password {v} -d orders', v)
v = mixed(12); add('redis-cli password', f'redis-cli -h cache-0 -a {v} INFO', v)
v = mixed(12); add('sshpass password', f'sshpass -p {v} ssh deploy@bastion', v)
v = mixed(12); add('docker login password', f'docker login -u ci -p {v} registry.example', v)
v = mixed(12); add('curl user password', f'curl -u admin:{v} https://api.internal/v1/reindex', v)
v = mixed(12); add('keytool store password', f'keytool -importkeystore -srckeystore a.p12 -srcstorepass {v}', v)
v = mixed(12); add('openssl pass argument', f'openssl pkcs12 -in a.p12 -passin pass:{v}', v)
v = r(HEX, 40); add('token after a ten-byte value', f'?user=ci&password={mixed(10)}&access_token={v}', v)
v = mixed(12); add('percent-encoded dsn password', f'dsn=postgres%3A%2F%2Fapp%3A{v}%40orders-db%2Fapp', v)
v = r(string.ascii_lowercase + string.digits, 26); add('mattermost webhook key', f'https://chat.example.com/hooks/{v}', v)
v = mixed(12); add('kubernetes env entry (yaml)', f'env:\n- name: DB_PASSWORD\n  value: "{v}"', v)
v = mixed(12); add('kubernetes env entry in a diff', f'+        - name: API_TOKEN\n+          value: {v}', v)
v = mixed(12); add('kubernetes env entry (json)', json.dumps({"env": [{"name": "DB_PASSWORD", "value": v}]}), v)
# A second review of those rules (2026-11-27): more shapes of the same.
v = mixed(12); add('mysql password on a continued line', f'mysql -h orders-db \\\n  -p{v} orders', v)
v = mixed(12); add('curl user on a continued line', f'curl -sS \\\n  -u admin:{v} https://api.internal', v)
v = mixed(12); add('docker login password without a space', f'docker login -u ci -p{v} registry.example', v)
v = mixed(12); add('prefixed password flag', f'helm repo add charts https://charts.example --db-password {v}', v)
v = mixed(12); add('password flag as json arguments', json.dumps({"args": ["--password", v]}), v)
v = r(HEX, 40); add('authorization in a go header map', f'map[Authorization:[Token {v}] Accept:[*/*]]', v)
v = mixed(12); add('terraform plan name/value pair', f'+ name  = "DB_PASSWORD"\n+ value = "{v}"', v)
v = mixed(12); add('.net appsettings pair', f'<add key="DB_PASSWORD" value="{v}"/>', v)
v = mixed(12); add('java properties xml entry', f'<entry key="db.password">{v}</entry>', v)
v = mixed(12); add('xml password in cdata', f'<password><![CDATA[{v}]]></password>', v)
v = mixed(12); add('xml secretKey element', f'<secretKey>{v}</secretKey>', v)
v = mixed(12); add('ssm parameter name/value', f'"Name": "/prod/orders/db_password", "Value": "{v}"', v)
v = mixed(12); add('mysql password as the first flag', f'kubectl exec orders-db-0 -- mysql -p{v} -e status', v)

lookalikes = [
 'Tests: pass: 12 fail: 0 skip: 3',
 'npx jest --pass-with-no-tests',
 'psql -p 5432 -h orders-db -U app',
 'redis-cli -p 6380 -h cache-0',
 'curl -u admin https://api.internal',
 'Authorization: unauthorized',
 'authorization denied for user alice',
 'kube-apiserver --authorization-mode=Node,RBAC',
 'https://gitlab.example.com/api/v4/projects/42/hooks/17',
 'POST /hooks/deploymentstatuswebhookreceiver 404',
 'automountServiceAccountToken: true',
 'tlsSecret: ingress-tls',
 '- name: POSTGRES_PASSWORD_FILE\n  value: /run/secrets/postgres-password',
 '- name: SECRET_NAME\n  value: db-credentials',
 'docker run -d --name mysql -p3306:3306 mysql:8.0',
 'mysql-0: rsync -pavz /data /backup',
 'docker buildx build --secret id=npmrc,src=/home/runner/.npmrc .',
 'psql --password -h orders-db',
 'openssl enc -aes-256-cbc -pass env:BACKUP_PASS -in dump.sql',
 'password_expiry_days=90',
 'auth_token_ttl_seconds=3600',
 'tokenizer=bpe max_tokens=4096',
 'ssh -p 2222 deploy@bastion.internal',
 'docker run -p 8080:80 registry.example/checkout:1.2.3',
 'mysql -h orders-db -P 3306 -u report -e status',
 'pg_dump --password-file=/run/secrets/pgpass orders',
 'Authorization: required for /admin',
 'token_ttl=3600 for the session cache',
 'webhook https://chat.example.com/hooks/incoming returned 404',
 'bypass=true for the health check route',
 'keytool -list -keystore /etc/ssl/app.jks',
 'CVE-2019-1549 in openssl-1.1.1c.tar.gz (libssl1.1_1.1.1d-0+deb10u2)',
 'CVE-2023-44487 HTTP/2 rapid reset affects golang.org/x/net v0.15.0',
 'CVE-2024-3094 xz-utils 5.6.0 backdoor',
 'GHSA-qppj-fm5r-hxr3 in github.com/opencontainers/runc',
 'GHSA-v95c-p5hm-xq8f: requests 2.31.0 leaks Proxy-Authorization headers',
 'BackOff: Back-off restarting failed container payments-api-deployment-7d9f8c6b5d-x2k9q',
 'CrashLoopBackOff for checkout-7d9f8c6b5d-x2k9q in namespace prod',
 'OOMKilled: container worker exceeded its memory limit of 512Mi',
 'ImagePullBackOff: registry.example/checkout:1.2.3-alpine not found',
 'FailedScheduling: 0/12 nodes are available: 3 Insufficient cpu',
 'image registry.example/checkout@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08',
 'digest sha512:cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e',
 'config commit 3f2a9c1d4e5b6a7980123456789abcdef0123456 broke checkout',
 'reverted 3f2a9c1 (require TLS) on payments-staging',
 'git describe: v2.14.0-17-g3f2a9c1',
 'trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7',
 'request id 550e8400-e29b-41d4-a716-446655440000 failed',
 'arn:aws:iam::123456789012:role/checkout-deployer assumed by codebuild',
 'arn:aws:s3:::arf-backups-prod/2026/11/26/dump.sql.gz',
 'AccessDenied for arn:aws:sts::123456789012:assumed-role/ops/alice',
 'account 123456789012 in eu-west-1',
 'signal_count=12 token_budget exceeded in pod checkout-7d9f8c6b5d-x2k9q',
 'max_tokens=2048 temperature=0.2',
 'password_policy: min_length=12',
 'password reset email sent to user 4412',
 'rotate the secret named db-credentials in namespace prod',
 'secretName: checkout-tls',
 'signature verification failed for commit 3f2a9c1d4e5b6a7980123456789abcdef0123456',
 'Bearer authentication required for /api/v1/orders',
 'basic authentication is disabled on this endpoint',
 'token expired; refreshing',
 'apiVersion: apps/v1 kind: Deployment metadata.name: checkout',
 'Semgrep python.lang.security.audit.dangerous-subprocess-use.dangerous-subprocess-use at app/run.py:9',
 'gitleaks rule generic-api-key matched config/prod.env:3',
 'trivy AVD-AWS-0086 S3 bucket does not block public ACLs',
 'Falco: Read sensitive file untrusted (user=root command=cat /etc/shadow)',
 'pod/checkout-7d9f8c6b5d-x2k9q evicted: node had memory pressure',
 'node ip-10-0-12-34.eu-west-1.compute.internal NotReady',
 'helm chart checkout-1.14.2 upgraded to revision 42',
 'kube-prometheus-stack-58.2.1 rolled out',
 'https://grafana.example.com/d/abc123def/checkout-overview?orgId=1&from=now-1h',
 'https://prometheus.example:9090/graph?g0.expr=rate(http_requests_total%5B5m%5D)',
 'alice@example.com approved decision dec-0f3a9c',
 '10.0.12.34:5432 connection refused',
 'latency p99 745ms over 5m (threshold 500ms)',
 'disk /var/lib/postgresql/data 98% full',
 '2026-11-26T03:00:00Z checkout 503 upstream connect error',
 'rate(http_requests_total{status=~"5..",service="checkout"}[5m]) > 0.05',
 'increase(kube_pod_container_status_restarts_total[15m]) > 3',
 'openjdk:17-jdk-slim-bullseye base image is end of life',
 'python3.11 -m pip install requests==2.31.0',
 'npm ERR! code ERESOLVE unable to resolve dependency tree',
 'go: github.com/golang-jwt/jwt/v4@v4.5.0 requires go >= 1.16',
 'node_modules/lodash/lodash.js prototype pollution',
 'libcurl4_7.88.1-10+deb12u5_amd64.deb',
 'k8s.io/client-go v0.29.3',
 'ReplicaSet checkout-7d9f8c6b5d scaled to 0',
 'resourceVersion 18446744 conflict',
 'The connection to the server localhost:8080 was refused',
 'x509: certificate signed by unknown authority',
 'TLS handshake timeout to etcd-0.etcd.kube-system.svc:2379',
 'ssh-ed25519 public key fingerprint SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s',
 'release v1.2.3 tagged by ci-bot',
 'Dockerfile:12 RUN apt-get install -y curl',
 '/etc/ssl/certs/ca-certificates.crt updated',
 'systemd: checkout.service: Main process exited, code=killed, status=9/KILL',
 'journal: Out of memory: Killed process 4412 (java)',
 'ERROR [main] o.s.b.SpringApplication - Application run failed',
 'java.lang.OutOfMemoryError: Java heap space',
 'panic: runtime error: invalid memory address or nil pointer dereference',
 'Traceback (most recent call last): KeyError: user_id',
 'HTTP 429 Too Many Requests; Retry-After: 30',
 'connection pool exhausted (max=50) for orders-db',
 'replication lag 42s on orders-db-replica-2',
 'certificate checkout.example.com expires in 6 days',
 'kubectl rollout undo deployment/checkout --to-revision=41',
 'terraform plan: 3 to add, 0 to change, 1 to destroy',
 'aws_s3_bucket.backups: public_access_block missing',
 'google_storage_bucket.assets uniform_bucket_level_access = false',
 'azurerm_storage_account.logs min_tls_version = TLS1_0',
 'container image checksum 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08 matches',
 'etag "33a64df551425fcc55e4d42a148795d9f25f89d4"',
 'job backup-2026-11-26-0300 completed in 12m04s',
 'cron */5 * * * * run-report',
 'feature flag checkout_v2 enabled for 10% of traffic',
 'queue orders.created depth 12004',
 'topic payments-events partition 3 offset 884213',
 'wal segment 000000010000000A000000FF archived',
 'ulimit -n 1024 too low for nginx worker_connections 4096',
 'memory usage 94.2% on node pool general-purpose-v3',
 'version go1.22.4 linux/amd64',
 'commit message: fix(auth): stop logging session ids',
 'Dependabot bumped jsonwebtoken from 9.2.0 to 9.3.0',
 'user agent Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36',
 'PodDisruptionBudget checkout-pdb allows 0 disruptions',
 'HorizontalPodAutoscaler checkout scaled from 4 to 12 replicas',
 'sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 of empty file',
 'SSM parameter /prod/checkout/feature-flags updated',
 'vault lease renewal for database/creds/readonly succeeded',
 'the key rotation for kms key alias/checkout-prod completed',
 'OIDC issuer https://token.actions.githubusercontent.com trusted',
]
out = ['# The redaction corpus (generated by a script with a fixed seed; every value is', '# a test value in the provider\'s published format, none real).', '# [[secret]]: `text` is planted in a signal; `core` must reach no output.', '# [[lookalike]]: `text` must reach every output unchanged.', '']
def tq(s):
    return "'''" + s + "'''" if "'''" not in s and not s.endswith("'") else json.dumps(s)
for name, text, core in secrets:
    out.append('[[secret]]')
    out.append(f'name = {json.dumps(name)}')
    out.append(f'text = {json.dumps(text)}')
    out.append(f'core = {json.dumps(core)}')
    out.append('')
for text in lookalikes:
    out.append('[[lookalike]]')
    out.append(f'text = {json.dumps(text)}')
    out.append('')
open(__import__('os').path.join(__import__('os').path.dirname(__file__), 'redaction.toml'), 'w').write('\n'.join(out))
print(len(secrets), len(lookalikes))
