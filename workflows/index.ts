export { migrationWorkflow } from './migration';
