/// <reference path="./interfaces/keyhole-secrets-secrets.d.ts" />
declare module 'keyhole:secrets/sdk@0.1.1' {
  export type * as KeyholeSecretsSecrets011 from 'keyhole:secrets/secrets@0.1.1'; // import keyhole:secrets/secrets@0.1.1
}
