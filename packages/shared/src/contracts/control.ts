/**
 * The control endpoint's ping: liveness and readiness of a runtime that admits `control`
 * connections (a dom0 for healthchecks and CLI views; a LAN switch).
 */
import { Type } from '@sinclair/typebox';
import { defineContract, method } from './contract.js';

export const ControlContract = defineContract('control', {
  methods: {
    /** Who answers, how many guests it has, how many of them are ready. */
    ping: method('control.ping', Type.Object({}), Type.Object({ host: Type.String(), guests: Type.Integer({ minimum: 0 }), ready: Type.Integer({ minimum: 0 }) }), []),
  },
});
