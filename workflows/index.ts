export { migrationWorkflow } from './migration';
export { copyWorkflow } from './copy-child';
